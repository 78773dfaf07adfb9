"""The shape a reader sees: six scripts on top, one package beneath that never imports them,
a model.py that imports nothing of the project's, and a README and its Chinese twin that
give the same commands."""
import ast
import re
import subprocess
import sys

import pytest

from conftest import ROOT

SCRIPTS = {"model", "train", "predict", "evaluate", "export", "app"}
ENTRY_SCRIPTS = SCRIPTS - {"model"}  # model.py is the tutorial's importable module: `from model import AlexNet`


def imported_modules(path) -> set[str]:
    """The top-level names a file imports, wherever in the file the import stands."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_the_top_level_holds_exactly_the_six_scripts():
    assert {p.stem for p in ROOT.glob("*.py")} == SCRIPTS


def test_no_entry_script_is_imported_outside_tests_and_tools():
    for path in [*ROOT.glob("*.py"), *(ROOT / "alexnet").glob("*.py"), *(ROOT / "data_set").glob("*.py")]:
        assert not imported_modules(path) & ENTRY_SCRIPTS, path
    assert imported_modules(ROOT / "model.py") - sys.stdlib_module_names == {"torch"}


@pytest.mark.slow
def test_from_model_import_alexnet_loads_nothing_of_the_project():
    code = ("import sys, torch; before = set(sys.modules); from model import AlexNet; "
            "print(sorted(m for m in set(sys.modules) - before if not m.startswith('torch')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "['model']"


def test_train_py_and_the_readme_stay_short():
    assert len((ROOT / "train.py").read_text(encoding="utf-8").splitlines()) <= 450
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 250


def commands(path) -> list[str]:
    """Every command in the file's bash blocks, its comment left out."""
    blocks = re.findall(r"```bash\n(.*?)```", path.read_text(encoding="utf-8"), re.S)
    return [line.split("  #")[0].strip() for block in blocks for line in block.splitlines() if line.strip()]


def test_the_chinese_readme_gives_the_same_commands_in_the_same_sections():
    english, chinese = ROOT / "README.md", ROOT / "README.zh-CN.md"
    assert commands(english) and commands(english) == commands(chinese)
    sections = [len(re.findall(r"^## ", p.read_text(encoding="utf-8"), re.M)) for p in (english, chinese)]
    assert sections[0] == sections[1] >= 10
    assert "README.zh-CN.md" in english.read_text(encoding="utf-8").split("\n## ")[0]  # linked from the top


def backward_calls() -> list[tuple[str, str]]:
    """(file, innermost enclosing function) of every ``.backward(`` call in the scripts and the package."""
    found = []

    class Visitor(ast.NodeVisitor):
        def __init__(self, name: str):
            self.name, self.functions = name, []

        def visit_FunctionDef(self, node):
            self.functions.append(node.name)
            self.generic_visit(node)
            self.functions.pop()

        def visit_Call(self, node):
            if isinstance(node.func, ast.Attribute) and node.func.attr == "backward":
                found.append((self.name, self.functions[-1] if self.functions else "<module>"))
            self.generic_visit(node)

    for path in [*ROOT.glob("*.py"), *(ROOT / "alexnet").glob("*.py"), *(ROOT / "data_set").glob("*.py")]:
        Visitor(path.name).visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


def test_a_training_step_calls_backward_in_one_function_in_train_py():
    """One training step in the project: train.py's, which --budget times and --lr find runs
    (tests/test_train.py counts its calls). The temperature fit is no training step."""
    # stats.py's closure: fit_temperature's L-BFGS step
    assert sorted(backward_calls()) == [("stats.py", "closure"), ("train.py", "train_step")]
    source = (ROOT / "train.py").read_text(encoding="utf-8")
    step = source[source.index("def train_step("):source.index("def lr_at(")]
    for call in ("zero_grad(", ".backward()", "clip_grad_norm_(", ".step(", "update_parameters("):
        assert call in step, call
