"""The shape a reader sees: six scripts on top, one package beneath that never imports them,
a model.py that imports nothing of the project's, and a README and its Chinese twin that
give the same commands."""
import ast
import re
import subprocess
import sys

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
    assert imported_modules(ROOT / "model.py") == {"torch"}


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
