"""Typed dataclasses turned into command-line flags (train.py, data.py, bench.py, probe.py).

Every field becomes `--field-name`, typed from its annotation, with the one-line comment
after the field as its help text. Booleans parse true/false (argparse's `type=bool` would
read "false" as True); floats must be finite. Unknown flags and bad values get one line of
error from argparse.
"""

import argparse
import dataclasses
import inspect
import math


def parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def parse_float(text: str) -> float:
    """A finite number: nan and inf parse as floats, and nan passes every later `< 0` check."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


PARSERS = {"int": int, "float": parse_float, "str": str, "bool": parse_bool}


def field_comments(cls) -> dict:
    """The comment after each field in the class source: `name: type = default   # comment`."""
    comments = {}
    for line in inspect.getsource(cls).splitlines():
        code, _, comment = line.partition("#")
        if ":" in code and "=" in code and comment:
            comments[code.split(":")[0].strip()] = comment.strip()
    return comments


def add_flags(parser, cls, prefix=""):
    """One flag per field of dataclass `cls`; values land in the namespace as 'ClassName.field'."""
    comments = field_comments(cls)
    for f in dataclasses.fields(cls):
        type_name = f.type if isinstance(f.type, str) else f.type.__name__
        parser.add_argument(f"--{prefix}{f.name.replace('_', '-')}", dest=f"{cls.__name__}.{f.name}",
                            type=PARSERS[type_name], default=argparse.SUPPRESS, metavar=type_name.upper(),
                            help=f"{comments.get(f.name, '')} (default: {f.default})")


def split_list(text: str) -> list[str]:
    """A comma-separated flag value, e.g. --tasks "vqa, reasoning" -> ['vqa', 'reasoning']."""
    return [s.strip() for s in text.split(",") if s.strip()]


def check_each_once(flag: str, values: list) -> None:
    """A comma-separated flag names each value once (a seed named twice would be trained once and counted
    twice in a table's mean ± std): raise ValueError naming the first repeated value."""
    if repeated := [v for i, v in enumerate(values) if v in values[:i]]:
        raise ValueError(f"--{flag} {','.join(map(str, values))}: {repeated[0]} is named twice")


def given_values(namespace, cls) -> dict:
    """The fields of `cls` that were given on the command line (absent ones keep their defaults)."""
    key = cls.__name__ + "."
    return {k[len(key):]: v for k, v in vars(namespace).items() if k.startswith(key)}
