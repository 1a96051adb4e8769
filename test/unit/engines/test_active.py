from airside_perception.engines.active import ActiveVersions


def test_round_trip_and_restart(tmp_path):
    path = tmp_path / "state" / "active.yaml"
    a = ActiveVersions(str(path), {"detection": "1.0.0"})
    assert a.version("detection") == "1.0.0" and "not found" in a.warning
    a.set("detection", "1.1.0")
    assert ActiveVersions(str(path), {"detection": "1.0.0"}).version("detection") == "1.1.0"
    assert not list(path.parent.glob(".tmp-*")), "temporary file left behind"


def test_corrupt_state_falls_back_with_a_warning(tmp_path):
    path = tmp_path / "active.yaml"
    path.write_text("detection: [1.1.0\n")
    a = ActiveVersions(str(path), {"detection": "1.0.0"})
    assert a.version("detection") == "1.0.0" and "unreadable" in a.warning
