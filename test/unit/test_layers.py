"""The package's rooms import each other in one direction only (imports inside functions count)."""

import os
import subprocess
import sys

import pytest

grimp = pytest.importorskip("grimp")

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def package_loops(edges):
    """Every pair of rooms that import each other through any chain: [(a, b), ...]."""
    rooms = {r for e in edges for r in e}
    reach = {r: set() for r in rooms}
    for a, b in edges:
        reach[a].add(b)
    changed = True
    while changed:
        changed = False
        for r in rooms:
            more = set().union(*(reach[x] for x in reach[r])) - reach[r]
            if more:
                reach[r] |= more
                changed = True
    return sorted((a, b) for a in rooms for b in reach[a] if a < b and a in reach[b])


def test_the_loop_finder_finds_a_loop_through_a_third_room():
    assert package_loops({("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")}) == [("a", "b"), ("a", "c"), ("b", "c")]
    assert package_loops({("a", "b"), ("b", "c")}) == []


def test_no_room_of_the_package_imports_one_that_imports_it():
    graph = grimp.build_graph("airside_perception", include_external_packages=False, cache_dir=None)
    edges = set()
    for module in graph.modules:
        for imported in graph.find_modules_directly_imported_by(module):
            if _room(module) != _room(imported):
                edges.add((_room(module), _room(imported)))
    assert len(edges) > 50, "the import graph was not read"
    assert package_loops(edges) == [], "rooms that import each other (move the shared part down a floor)"


def test_the_floors_in_pyproject_hold():
    pytest.importorskip("importlinter")
    out = subprocess.run([os.path.join(os.path.dirname(sys.executable), "lint-imports"), "--no-cache"], cwd=ROOT,
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.path.join(ROOT, "src")})
    assert out.returncode == 0 and "1 kept, 0 broken" in out.stdout, out.stdout[-3000:]
