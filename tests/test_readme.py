"""The README's examples run as written, and its quick start is the two make commands."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_python_examples_run(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # as a user on a CPU machine runs it
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    for code in blocks:
        scope = {}
        exec(compile(code, str(README), "exec"), scope)
    assert scope["img"].grad is not None and scope["loss"].ndim == 0


def test_quick_start_is_make_demo_and_make_test():
    text = README.read_text()
    quick = text.split("## Quick start", 1)[1].split("##", 1)[0]
    commands = re.findall(r"^make \w+", quick, flags=re.M)
    assert commands == ["make demo", "make test"]
