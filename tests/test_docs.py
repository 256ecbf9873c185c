"""Every command the README and EXPERIMENTS.md show parses: its flags exist and its values pass
the program's own checks (nothing is run). A flag renamed in the code fails here, not on a reader's
machine."""

import re
import shlex
from pathlib import Path

import pytest

import bench
import data
import export
import report
import train

ROOT = Path(__file__).resolve().parent.parent
DOCS = ("README.md", "EXPERIMENTS.md")
PARSERS = {"train.py": train.parse_args, "bench.py": bench.parse_args, "data.py": data.parse_args,
           "report.py": report.parse_args, "export.py": export.parse_args}
PATH_FLAGS = ("--data-dir", "--image-dir", "--vocab")  # folders and files on the author's machine


def shell_commands(text: str) -> list[str]:
    """Each command in ``` blocks (continued lines joined) and in `python ...` spans, comments dropped."""
    commands = []
    for block in re.findall(r"```(?:bash)?\n(.*?)```", text, re.S):
        commands += [line.split("#")[0].strip() for line in block.replace("\\\n", " ").splitlines()]
    text_outside = re.sub(r"```.*?```", "", text, flags=re.S)
    spans = [" ".join(span.split()) for span in re.findall(r"`(python [^`]+)`", text_outside)]
    commands += [span for span in spans if len(span.split()) > 2]  # `python report.py` alone names it
    return [c for c in commands if c]


def program_arguments(command: str):
    """('train.py', [flags...]) for a command that runs one of our programs, else None."""
    words = shlex.split(command)
    for i, word in enumerate(words):
        if word in PARSERS and (i == 0 or words[i - 1] == "python" or words[0] == "torchrun"):
            return word, words[i + 1:]
    return None


def documented_commands():
    found = []
    for doc in DOCS:
        for command in shell_commands((ROOT / doc).read_text()):
            parsed = program_arguments(command)
            if parsed:
                found.append(pytest.param(*parsed, id=f"{doc}: {command[:70]}"))
    return found


def test_the_docs_show_commands_of_every_program():
    programs = {p.values[0] for p in documented_commands()}
    assert {"train.py", "bench.py", "data.py", "report.py", "export.py"} <= programs


def test_shell_commands_joins_continued_lines_and_drops_comments():
    text = "x\n```bash\npython train.py --size tiny \\\n    --steps 3   # a comment\n```\nsee `python data.py\n--size tiny`."
    assert shell_commands(text) == ["python train.py --size tiny      --steps 3", "python data.py --size tiny"]


@pytest.mark.parametrize("program, argv", documented_commands())
def test_documented_command_parses(program, argv, tmp_path):
    argv = [str(tmp_path) if i > 0 and argv[i - 1] in PATH_FLAGS else a for i, a in enumerate(argv)]
    try:
        PARSERS[program](argv)
    except SystemExit as error:
        if error.code == 0:  # --help
            return
        pytest.fail(f"python {program} {' '.join(argv)}: exits with {error.code} (its error is printed above)")


def test_a_stale_flag_fails_to_parse():
    with pytest.raises(SystemExit):
        train.parse_args(["--size", "tiny", "--no-such-flag", "1"])
