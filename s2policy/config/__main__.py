"""Print every config option with its default and meaning, as the Markdown tables of docs/configs.md:

    python -m s2policy.config > options.md

The text comes from the dataclasses in groups.py (each field's `#:` comment), so the docs cannot drift from the
code: tests/test_configs.py compares them.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing

from .checks import show
from .groups import (CollectConfig, EncoderConfig, EvalRun, EvalSettings, FeaturesConfig, HeadConfig, S2Config, StudyConfig,
                     TaskConfig, TrainConfig, TrainRun)

#: (heading, dataclass, key prefix) in the order the docs list them
SECTIONS = [
    ("task", TaskConfig, "task."), ("encoder", EncoderConfig, "encoder."), ("s2", S2Config, "s2."),
    ("features", FeaturesConfig, "features."), ("policy", HeadConfig, "policy."), ("train", TrainConfig, "train."),
    ("collect", CollectConfig, "collect."), ("eval", EvalSettings, "eval."),
    ("train run (train_policy, s2policy-train)", TrainRun, ""), ("evaluation run (eval_policy, s2policy-evaluate)",
                                                                  EvalRun, ""),
    ("study (s2policy-study)", StudyConfig, ""),
]


def field_docs(cls: type) -> dict[str, str]:
    """{field: its `#:` comment} from the class source (same line, or the comment lines just above)."""
    docs: dict[str, str] = {}
    pending: list[str] = []
    for line in inspect.getsource(cls).splitlines():
        stripped = line.strip()
        if stripped.startswith("#:"):
            pending.append(stripped[2:].strip())
            continue
        m = re.match(r"(\w+): [^=]+?(?: = .*?)?(?:\s+#: (.*))?$", stripped)
        if m and not stripped.startswith(("def ", "return", "@")):
            docs[m.group(1)] = " ".join([*pending, m.group(2) or ""]).strip()
        pending = []
    return docs


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        return show(f.default)
    value = f.default_factory()
    return "(group)" if dataclasses.is_dataclass(value) else show(value)


def markdown() -> str:
    out = []
    for heading, cls, prefix in SECTIONS:
        docs = field_docs(cls)
        out += [f"### {heading}", "", (inspect.getdoc(cls) or "").splitlines()[0], "",
                "| option | default | meaning |", "|---|---|---|"]
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[f.name]) or f.name == "options":
                continue
            meaning = docs.get(f.name, "").replace("|", "\\|")  # a table cell
            out.append(f"| `{prefix}{f.name}` | `{_default(f)}` | {meaning} |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(markdown(), end="")
