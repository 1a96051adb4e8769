"""Every study under experiments/ says what it asked, how, what it found and whether it still
runs; those that give a ``Smoke:`` command are run at that tiny size here."""

import glob
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
STUDIES = sorted(os.path.dirname(p) for p in glob.glob(os.path.join(ROOT, "experiments", "*", "README.md")))
FIELDS = ("**Question.**", "**Command.**", "**Answer", "**Still runs?**")


def _smoke(readme: str):
    runs = readme[readme.index("**Still runs?**"):]
    m = re.search(r"Smoke:\s*`([^`]+)`", runs.split("\n\n")[0])
    return m.group(1) if m else None


def test_every_study_has_its_question_command_answer_and_run_status():
    assert len(STUDIES) >= 10
    index = open(os.path.join(ROOT, "experiments", "README.md")).read()
    for study in STUDIES:
        text = open(os.path.join(study, "README.md")).read()
        missing = [f for f in FIELDS if f not in text]
        assert not missing, f"{study}/README.md lacks {missing}"
        runs = text[text.index("**Still runs?**"):]
        assert _smoke(text) or "Smoke: none" in runs, f"{study}: say 'Smoke: `command`' or 'Smoke: none — why'"
        assert f"({os.path.basename(study)}/README.md)" in index, f"experiments/README.md does not list {study}"
        scripts = glob.glob(os.path.join(study, "*.py")) + glob.glob(os.path.join(study, "*.sh"))
        assert scripts, f"{study} has no script"


def test_no_study_is_left_in_scripts():
    make = open(os.path.join(ROOT, "Makefile")).read()
    for path in glob.glob(os.path.join(ROOT, "scripts", "*")):
        name = os.path.basename(path)
        assert f"scripts/{name}" in make, f"scripts/{name} is not called by make: studies go to experiments/<name>/"


@pytest.mark.slow
@pytest.mark.parametrize("study", [s for s in STUDIES if _smoke(open(os.path.join(s, "README.md")).read())],
                         ids=os.path.basename)
def test_the_study_still_runs_at_its_smoke_size(study, tmp_path):
    pytest.importorskip("torch")  # the studies are offline work: make test installs the CPU wheel
    command = _smoke(open(os.path.join(study, "README.md")).read())
    env = {**os.environ, "OUT": str(tmp_path), "TMPDIR": str(tmp_path), "PYTHONPATH": os.path.join(ROOT, "src"),
           "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
    out = subprocess.run(["bash", "-c", command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"{command}\n{out.stdout[-1500:]}\n{out.stderr[-3000:]}"
