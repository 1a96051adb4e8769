from airside_perception.engines import cache_key as ck


def test_key_in_file_name_and_sidecar(tmp_path):
    key = ck.EngineKey("ab" * 32, "8.6.2", "8.7", 0, "int8", ck.profile_digest({"bev": ((1,), (1,), (1,))}))
    name = key.file_name()
    assert name.startswith("abababababab_trt8.6.2_sm87_dla0_int8_") and name.endswith(".engine")
    engine = tmp_path / name
    engine.write_bytes(b"x")
    ck.write_sidecar(str(engine), key)
    assert ck.read_sidecar(str(engine)) == key
    assert ck.matching_engines(str(tmp_path), "ab" * 32, "8.6.2", "8.7", 0) == [str(engine)]
    assert ck.matching_engines(str(tmp_path), "ab" * 32, "8.6.2", "8.9", 0) == []
    assert "compute capability 8.7" in ck.mismatch_reason(key, "ab" * 32, "8.6.2", "8.9")
    assert "TensorRT 8.6.2" in ck.mismatch_reason(key, "ab" * 32, "10.3.0", "8.7")
    assert ck.mismatch_reason(key, "ab" * 32, "8.6.2", "8.7") is None
