"""The guides stay true to the tree: every result they cite exists and is in the results index,
every result file is indexed, and the reference tables name exactly the configuration keys and
launch arguments the code reads."""

import glob
import os
import re
import xml.etree.ElementTree as ET

import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
GUIDES = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
RESULTS = os.path.join(ROOT, "docs", "results")
CITED = re.compile(r"docs/results/([A-Za-z0-9_.\-/]+[A-Za-z0-9_\-/])")


def _text(path):
    with open(path) as f:
        return f.read()


def test_the_readme_is_short_and_names_every_guide_in_one_link():
    readme = _text(os.path.join(ROOT, "README.md"))
    assert len(readme.splitlines()) <= 250
    for guide in glob.glob(os.path.join(ROOT, "docs", "*.md")):
        assert f"(docs/{os.path.basename(guide)})" in readme, f"README.md does not link {guide}"


def test_every_result_a_guide_cites_exists_and_is_indexed():
    index = _text(os.path.join(RESULTS, "README.md"))
    cited = set()
    for guide in GUIDES:
        text = _text(guide)  # a name cut at a placeholder (evaluate_<task>.json, *_1.3.0) stands for a family
        cited |= {m.group(1) for m in CITED.finditer(text) if text[m.end():m.end() + 1] not in ("<", "*", "{")}
    assert len(cited) > 30
    missing = sorted(c for c in cited if not os.path.exists(os.path.join(RESULTS, c)))
    assert not missing, f"cited but not in docs/results/: {missing}"
    unindexed = sorted(c for c in cited if os.path.isfile(os.path.join(RESULTS, c)) and c != "README.md"
                       and f"]({c})" not in index)
    assert not unindexed, f"cited but not in docs/results/README.md: {unindexed}"


def test_every_result_file_is_in_the_index():
    index = _text(os.path.join(RESULTS, "README.md"))
    folders = set(re.findall(r"\]\(([A-Za-z0-9_.\-/]+/)\)", index))  # a folder row covers its files
    files = [os.path.relpath(p, RESULTS) for p in glob.glob(os.path.join(RESULTS, "**", "*"), recursive=True)
             if os.path.isfile(p) and not p.endswith("README.md")]
    missing = sorted(f for f in files if f"]({f})" not in index and not any(f.startswith(d) for d in folders))
    assert not missing, f"result files docs/results/README.md does not list: {missing}"


def _table_names(guide_text, heading):
    """The backticked names in the first column of the Parameters table under ``heading``."""
    section = guide_text[guide_text.index(heading):]
    table = section[section.index("\n|") + 1:]
    names = set()
    for line in table.splitlines():
        if not line.startswith("|"):
            break
        first = line.split("|")[1]
        names |= set(re.findall(r"`([a-z_][a-z0-9_.]*)`", first))
    return names


def test_the_node_parameter_tables_name_exactly_the_schema_keys():
    from airside_perception import node_configs

    guide = _text(os.path.join(ROOT, "docs", "vehicle_integrator.md"))
    cases = {"**Parameters** (`config/inference_host.yaml`": (
        set(node_configs.INFERENCE_HOST) - {"swap"}) | {f"swap.{k}" for k in node_configs.INFERENCE_HOST_SWAP},
        "Parameters (`config/simplex.yaml`": set(node_configs.SIMPLEX),
        "**Parameters** (`config/baseline.yaml`": (set(node_configs.BASELINE) - {"ground", "clusters", "occupancy"})
        | {f"{s}.{k}" for s, sub in (("ground", node_configs.BASELINE_GROUND),
                                     ("clusters", node_configs.BASELINE_CLUSTERS),
                                     ("occupancy", node_configs.BASELINE_OCCUPANCY)) for k in sub},
        "**Parameters** (`config/model_manager.yaml`": set(node_configs.MODEL_MANAGER),
        "**Parameters** (`config/data_recorder.yaml`": set(node_configs.DATA_RECORDER)}
    for heading, keys in cases.items():
        names = _table_names(guide, heading)
        assert names == keys, f"{heading}: missing {sorted(keys - names)}, unknown {sorted(names - keys)}"
        config = yaml.safe_load(_text(os.path.join(ROOT, "config", heading.split("`")[1].split("/")[1])))
        assert set(config) >= {k.split(".")[0] for k in keys}


def test_the_launch_table_names_every_argument_of_full_launch():
    readme = _text(os.path.join(ROOT, "README.md"))
    row = next(line for line in readme.splitlines() if line.startswith("| `full.launch`"))
    documented = set(re.findall(r"`([a-z_]+)`", row))
    args = {a.get("name") for a in ET.parse(os.path.join(ROOT, "launch", "full.launch")).getroot().findall("arg")}
    missing = sorted(args - documented)
    assert not missing, f"full.launch arguments the README's launch table does not name: {missing}"
