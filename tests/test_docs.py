"""Every command the README and EXPERIMENTS.md show parses: its flags exist and its values pass
the program's own checks (nothing is run). A flag renamed in the code fails here, not on a reader's
machine."""

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

import bench
import data
import export
import probe
import report
import train

ROOT = Path(__file__).resolve().parent.parent
DOCS = {"README.md": 10, "EXPERIMENTS.md": 15}   # each doc, and the fewest program commands it shows
PARSERS = {"train.py": train.parse_args, "bench.py": bench.parse_args, "data.py": data.parse_args,
           "report.py": report.parse_args, "export.py": export.parse_args,
           "probe.py": probe.parse_args}
PATH_FLAGS = ("--data-dir", "--image-dir", "--vocab")   # folders and files on the author's machine
OTHER_TOOLS_FLAGS = {"--index-url", "--shm-size", "--ipc"}   # pip's and docker's


def prose(text: str) -> str:
    """The text without its fenced code blocks (indented ones too)."""
    return re.sub(r"^[ \t]*```.*?^[ \t]*```", "", text, flags=re.S | re.M)


def shell_commands(text: str) -> list[str]:
    """Each command in ```bash (or ```sh, or bare ```) blocks, continued lines joined, with any
    `python x.py ...` written in a comment; and each `python ...` span of the prose."""
    commands = []
    for language, block in re.findall(r"^[ \t]*```(\w*)\n(.*?)^[ \t]*```", text, re.S | re.M):  # also indented
        if language not in ("", "bash", "sh"):
            continue
        for line in block.replace("\\\n", " ").splitlines():
            code, _, comment = line.partition("#")
            commands.append(code.strip())
            commands += [c.strip() for c in re.findall(r"python3? \w+\.py[^()]*", comment)]
    spans = [" ".join(span.split()) for span in re.findall(r"`(python3? [^`]+)`", prose(text))]
    commands += [span for span in spans if len(span.split()) > 2]   # `python report.py` alone names it
    return [c for c in commands if c]


def program_arguments(command: str):
    """('train.py', [flags...]) for a command that runs one of our programs (python, python3 -u,
    torchrun ...), else None."""
    words = shlex.split(command)
    for i, word in enumerate(words):
        if word in PARSERS:
            return word, words[i + 1:]
    return None


def documented_commands(doc: str) -> list:
    return [parsed for c in shell_commands((ROOT / doc).read_text()) if (parsed := program_arguments(c))]


def every_option() -> set:
    """Every --flag of every program, read from the option lines of its --help (not its prose)."""
    options = set()
    for parse in PARSERS.values():
        text = io.StringIO()
        with contextlib.redirect_stdout(text), pytest.raises(SystemExit):
            parse(["--help"])
        options |= set(re.findall(r"^ +(?:-\w, )?(--[a-z][a-z0-9-]*)", text.getvalue(), re.M))
    return options


def test_shell_commands_reads_blocks_comments_and_spans():
    text = ("x\n```sh\nls\n```\nprose\n```bash\npython train.py --size tiny \\\n    --steps 3   # or: python data.py "
            "--size tiny   (CPU)\n```\n```text\npython bench.py --not-a-command\n```\n- a list item:\n\n  ```bash\n"
            "  python report.py runs/a\n  ```\nsee `python data.py\n--size tiny`.")
    assert shell_commands(text) == ["ls", "python train.py --size tiny      --steps 3", "python data.py --size tiny",
                                    "python report.py runs/a", "python data.py --size tiny"]
    assert program_arguments("OMP_NUM_THREADS=1 torchrun --nproc_per_node=2 train.py --size tiny") == \
        ("train.py", ["--size", "tiny"])


@pytest.mark.parametrize("doc", DOCS)
def test_each_doc_shows_its_commands(doc):
    assert len(documented_commands(doc)) >= DOCS[doc]


def test_the_docs_show_every_program():
    assert {program for doc in DOCS for program, _ in documented_commands(doc)} == set(PARSERS)


@pytest.mark.parametrize("program, argv", [pytest.param(program, argv, id=f"{doc}: {program} {' '.join(argv)[:60]}")
                                           for doc in DOCS for program, argv in documented_commands(doc)])
def test_documented_command_parses(program, argv, tmp_path):
    (tmp_path / "vocab.txt").write_text("[PAD]\n")
    words = []
    for word in argv:     # paths of the author's machine become paths that exist here
        flag = words[-1] if words else ""
        name = word.split("=")[0]
        if flag in PATH_FLAGS:
            word = str(tmp_path / "vocab.txt") if flag == "--vocab" else str(tmp_path)
        elif name in PATH_FLAGS and "=" in word:
            word = f"{name}={tmp_path / 'vocab.txt' if name == '--vocab' else tmp_path}"
        words.append(word)
    try:
        PARSERS[program](words)
    except SystemExit as error:
        if error.code == 0:  # --help
            return
        pytest.fail(f"python {program} {' '.join(words)}: exits with {error.code} (its error is printed above)")


@pytest.mark.parametrize("doc", DOCS)
def test_every_flag_the_prose_names_exists(doc):
    """`--steps 2000`, `--families`, ...: each --flag in a backticked span is an option of some program."""
    options = every_option() | OTHER_TOOLS_FLAGS
    spans = re.findall(r"`([^`]*)`", prose((ROOT / doc).read_text()))
    named = {flag for span in spans for flag in re.findall(r"--[a-z][a-z0-9-]*", span)}
    assert named and not named - options, f"not an option of any program: {sorted(named - options)}"


def test_a_stale_flag_fails_to_parse():
    with pytest.raises(SystemExit):
        train.parse_args(["--size", "tiny", "--no-such-flag", "1"])
