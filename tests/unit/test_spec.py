"""The pipeline spec: parsing, error messages with locations, interpolation, secrets, schema."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from tests.unit.test_cli_plugins import (
    BUILT,
    PLUGINS,
    FileSinkConfig,
    RowsSourceConfig,
    read_rows,
    registry,
)

from sluiceway.config import (
    Settings,
    SpecError,
    build_pipeline,
    load_settings,
    load_spec,
    locate,
    parse_duration,
    parse_spec,
    registry_with,
    spec_json_schema,
)
from sluiceway.core.dlq import read_dead_letters
from sluiceway.core.errors import ConfigError, MissingExtraError
from sluiceway.plugins import Plugin, Registry, StageConfig

GOOD = """\
version: 1
name: orders-to-file
source:
  type: test-rows
  rows: 10
  batch_size: 4
  negative: [3, 7]
  dsn: ${TEST_DSN}
transforms:
  - type: test-label
validators:
  - type: test-positive
    on_fail: dlq
sink:
  type: test-file
  path: out/rows.jsonl
  mode: append
retry: {attempts: 3, backoff: fixed, initial_delay: 500ms, max_delay: 5m, deadline: 1h}
prefetch: 3
"""


def write(tmp_path: Path, text: str, name: str = "pipeline.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_spec(textwrap.dedent(text), file="p.yaml", registry=registry(), env=env or {})
    return str(info.value).splitlines()


def test_a_valid_spec_parses_to_typed_models_and_round_trips(tmp_path: Path) -> None:
    spec, base_dir = load_spec(write(tmp_path, GOOD), registry(), env={"TEST_DSN": "pg://x"})
    assert base_dir == tmp_path.resolve()
    assert isinstance(spec.source, RowsSourceConfig)
    assert spec.source.negative == [3, 7]
    assert spec.source.dsn is not None and spec.source.dsn.get_secret_value() == "pg://x"
    assert [t.type for t in spec.transforms] == ["test-label"]
    assert isinstance(spec.sink, FileSinkConfig) and spec.sink.mode == "append"
    assert (spec.retry.initial_delay, spec.retry.max_delay, spec.retry.deadline) == (0.5, 300, 3600)
    assert spec.engine == "polars" and spec.prefetch == 3 and spec.home == ".sluiceway"
    # Dumped and validated again, the spec is the same.
    again = parse_spec(
        json.dumps(
            spec.model_dump(mode="json") | {"source": {**spec.source.model_dump(), "dsn": "pg://x"}}
        ),
        registry=registry(),
        env={},
    )
    assert again == spec


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30", 30.0),
        ("500ms", 0.5),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        (2, 2.0),
    ],
)
def test_durations_accept_numbers_and_units(text: object, expected: float) -> None:
    assert parse_duration(text) == expected


def test_errors_name_file_line_column_path_and_expectation() -> None:
    lines = problems(
        """\
        version: 1
        name: Not A Slug
        source:
          type: test-rows
          rows: lots
          colour: red
        sink:
          type: test-file
          mode: upsert
        retry:
          attempts: 0
          max_delay: 5 fortnights
        engine: spark
        """
    )
    assert lines == [
        "p.yaml:2:7: name: must be lowercase letters, digits, '-' or '_', starting with a letter"
        " or digit (got 'Not A Slug')",
        "p.yaml:5:9: source.rows: Input should be a valid integer, unable to parse string as an"
        " integer (got 'lots')",
        "p.yaml:6:3: source.colour: unknown key (allowed: batch_size, dsn, fail_after, negative,"
        " rows, sleep, type)",
        "p.yaml:8:3: sink.path: required, but missing",
        "p.yaml:9:9: sink.mode: Input should be 'append' or 'replace' (got 'upsert')",
        "p.yaml:11:13: retry.attempts: Input should be greater than or equal to 1 (got 0)",
        "p.yaml:12:14: retry.max_delay: invalid duration '5 fortnights': use seconds (30) or a"
        " number with a unit (500ms, 30s, 5m, 1h, 1d)",
        "p.yaml:13:9: engine: Input should be 'polars', 'pandas' or 'duckdb' (got 'spark')",
    ]


def test_unknown_type_lists_the_known_types_and_hints_at_installing() -> None:
    lines = problems(
        """\
        version: 1
        name: p
        source: {type: test-rows}
        transforms:
          - type: test-lable
        sink:
          path: x
        """
    )
    assert lines[0] == (
        "p.yaml:5:11: transforms[0].type: unknown transform type 'test-lable' (did you mean "
        "'test-label'?); known: test-label; a third-party type needs its package installed "
        "(or listed in SLUICEWAY_PLUGINS)"
    )
    assert lines[1] == (
        "p.yaml:7:3: sink: missing 'type' (known sink types: test-file, test-needs-extra)"
    )
    assert len(lines) == 2  # nothing else reported for the stages whose type is unknown


def test_unknown_top_level_key_and_a_typo_get_a_suggestion() -> None:
    lines = problems(
        """\
        version: 1
        name: p
        source: {type: test-rows}
        sink: {type: test-file, path: x}
        retyr: {attempts: 2}
        """
    )
    assert len(lines) == 1
    assert lines[0].startswith("p.yaml:5:1: retyr: unknown key (did you mean 'retry'? allowed: ")


def test_version_is_required_and_only_1_exists() -> None:
    assert problems("name: p\nsource: {type: test-rows}\nsink: {type: test-file, path: x}\n") == [
        "p.yaml:1:1: version: required, but missing"
    ]
    assert problems(
        "version: 2\nname: p\nsource: {type: test-rows}\nsink: {type: test-file, path: x}\n"
    ) == ["p.yaml:1:10: version: only 'version: 1' exists; start the spec with 'version: 1'"]


def test_yaml_syntax_errors_duplicates_and_shapes() -> None:
    (line,) = problems("version: 1\nname: [unclosed\nsource: x\n")
    assert line.startswith("p.yaml:3:7: invalid YAML: ")
    (line,) = problems(
        "version: 1\nname: p\nname: q\nsource: {type: test-rows}\n"
        "sink: {type: test-file, path: x}\n"
    )
    assert line == "p.yaml:3:1: name: duplicate key (first given on line 2)"
    assert problems("- a\n- b\n") == [
        "p.yaml:1:1: a pipeline spec is a mapping of keys (version, name, …), got a list"
    ]
    assert problems("# nothing here\n") == [
        "p.yaml: the file is empty; a pipeline spec starts with 'version: 1'"
    ]


def test_missing_file_empty_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"nope\.yaml: no such file"):
        load_spec(tmp_path / "nope.yaml", registry())
    with pytest.raises(SpecError, match=r"empty\.yaml: the file is empty"):
        load_spec(write(tmp_path, "", "empty.yaml"), registry())
    with pytest.raises(SpecError, match="is a directory"):
        load_spec(tmp_path, registry())


def test_env_interpolation_with_defaults_escapes_and_missing_variables() -> None:
    text = """\
        version: 1
        name: ${NAME:-fallback}
        source: {type: test-rows, rows: "${ROWS}"}
        sink: {type: test-file, path: "$${NOT_A_VAR}/${DIR:-out}/rows.jsonl"}
        """
    spec = parse_spec(textwrap.dedent(text), registry=registry(), env={"ROWS": "42", "DIR": ""})
    assert spec.name == "fallback"
    assert isinstance(spec.source, RowsSourceConfig) and spec.source.rows == 42
    assert isinstance(spec.sink, FileSinkConfig)
    assert spec.sink.path == "${NOT_A_VAR}/out/rows.jsonl"

    assert problems(text, env={"NAME": "p"}) == [
        "p.yaml:3:33: source.rows: environment variable ROWS is not set (set it, or give a"
        " default: ${ROWS:-default})"
    ]


def test_secrets_never_appear_in_errors_or_reprs() -> None:
    secret = "hunter2-very-secret"
    text = """\
        version: 1
        name: p
        source: {type: test-rows, dsn: "${DSN}", rows: "${ROWS}"}
        sink: {type: test-file, path: x, password: 12345678}
        """
    with pytest.raises(SpecError) as info:
        parse_spec(textwrap.dedent(text), registry=registry(), env={"DSN": secret, "ROWS": secret})
    message = str(info.value)
    assert "source.rows" in message and "sink.password" in message
    assert secret not in message and "12345678" not in message

    spec = parse_spec(
        textwrap.dedent(text).replace("${ROWS}", "3").replace("12345678", '"pw-456"'),
        registry=registry(),
        env={"DSN": secret},
    )
    assert secret not in repr(spec) and secret not in str(spec)
    assert "pw-456" not in repr(spec)


def test_json_schema_lists_the_registered_types() -> None:
    schema = spec_json_schema(registry())
    assert schema["required"] == ["version", "name", "source", "sink"]
    source = schema["properties"]["source"]
    assert source["discriminator"]["propertyName"] == "type"
    assert set(source["discriminator"]["mapping"]) == {"test-rows"}
    sinks = schema["properties"]["sink"]["discriminator"]["mapping"]
    assert set(sinks) == {"test-file", "test-needs-extra"}
    items = schema["properties"]["transforms"]["items"]
    assert set(items["discriminator"]["mapping"]) == {"test-label"}
    dsn = json.dumps(schema["$defs"]["RowsSourceConfig"]["properties"]["dsn"])
    assert '"writeOnly": true' in dsn


def test_build_pipeline_runs_with_paths_relative_to_the_spec(tmp_path: Path) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    path = write(folder, GOOD)
    spec, base_dir = load_spec(path, registry(), env={"TEST_DSN": "x"})
    BUILT.clear()
    pipeline = build_pipeline(spec, base_dir=base_dir, registry=registry())
    assert {ctx.base_dir for ctx in BUILT} == {folder.resolve()}
    assert {ctx.pipeline for ctx in BUILT} == {"orders-to-file"}
    assert pipeline.retry.attempts == 3 and pipeline.retry.backoff == "fixed"
    assert pipeline.retry.initial_delay == 0.5 and pipeline.retry.deadline == 3600
    assert pipeline.prefetch == 3

    metrics = pipeline.run()
    rows = read_rows(folder / "out" / "rows.jsonl")
    assert sorted(r["id"] for r in rows) == [0, 1, 2, 4, 5, 6, 8, 9]
    assert all(r["label"] == f"row-{r['id']}" for r in rows)
    dead = read_dead_letters(folder / ".sluiceway" / "dlq" / "orders-to-file")
    assert sorted(json.loads(r)["id"] for r in dead.column("row").to_pylist()) == [3, 7]
    assert (folder / ".sluiceway" / "state" / "orders-to-file.state.json").exists()
    assert (metrics.read, metrics.written, metrics.dead_lettered) == (10, 8, 2)


def test_locations_honour_spec_paths_and_the_home_setting(tmp_path: Path) -> None:
    text = GOOD + "dlq: {uri: dead}\nstate: {uri: /abs/state}\nhome: h\n"
    spec, base_dir = load_spec(write(tmp_path, text), registry(), env={"TEST_DSN": "x"})
    places = locate(spec, base_dir, registry=registry())
    assert places.home == tmp_path.resolve() / "h"
    assert places.dlq == str(tmp_path.resolve() / "dead")
    assert places.state == str(Path("/abs/state") / "orders-to-file.state.json")
    plain, _ = load_spec(write(tmp_path, GOOD, "p2.yaml"), registry(), env={"TEST_DSN": "x"})
    moved = locate(plain, base_dir, Settings(home=str(tmp_path / "elsewhere")), registry())
    assert moved.dlq == str(tmp_path / "elsewhere" / "dlq" / "orders-to-file")
    assert moved.state == str(tmp_path / "elsewhere" / "state" / "orders-to-file.state.json")


def test_store_types_come_from_the_uri_scheme(tmp_path: Path) -> None:
    text = GOOD + "dlq: {uri: 's3://lake/_dlq'}\n"
    with pytest.raises(SpecError) as info:
        load_spec(write(tmp_path, text), registry(), env={"TEST_DSN": "x"})
    assert "unknown dlq type 's3'" in str(info.value)
    assert "known: local" in str(info.value)


def test_a_missing_extra_is_a_config_error_naming_the_install(tmp_path: Path) -> None:
    text = GOOD.replace(
        "type: test-file\n  path: out/rows.jsonl\n  mode: append", "type: test-needs-extra"
    )
    spec, base_dir = load_spec(write(tmp_path, text), registry(), env={"TEST_DSN": "x"})
    with pytest.raises(MissingExtraError, match=r"pip install 'sluiceway\[nothing\]'"):
        build_pipeline(spec, base_dir=base_dir, registry=registry())


def test_settings_from_env_and_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("SLUICEWAY_HOME=/from/dotenv\nSLUICEWAY_LOG_FORMAT=json\n")
    monkeypatch.setenv("SLUICEWAY_LOG_LEVEL", "DEBUG")
    settings = load_settings()
    assert (settings.home, settings.log_level, settings.log_format) == (
        "/from/dotenv",
        "debug",
        "json",
    )
    monkeypatch.setenv("SLUICEWAY_HOME", "/from/env")
    assert load_settings().home == "/from/env"
    monkeypatch.setenv("SLUICEWAY_LOG_FORMAT", "xml")
    with pytest.raises(ConfigError, match="SLUICEWAY_LOG_FORMAT"):
        load_settings()


def test_plugins_from_a_reference_are_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.unit.test_cli_plugins import ENV_PLUGINS

    extended = registry_with([ENV_PLUGINS])
    assert extended.get("source", "test-rows").type == "test-rows"
    with pytest.raises(ConfigError, match="cannot load 'nowhere_module:X'"):
        registry_with(["nowhere_module:X"])
    with pytest.raises(ConfigError, match="module:ATTRIBUTE"):
        registry_with(["just-a-name"])


def test_a_plugin_with_a_bad_config_model_only_breaks_specs_that_use_it() -> None:
    class LooseConfig(StageConfig):  # forgot to narrow type to a Literal
        pass

    loose = Plugin("sink", "loose", LooseConfig, lambda config, ctx: None)
    reg = Registry([*PLUGINS, loose], entry_points=False)
    fine = "version: 1\nname: p\nsource: {type: test-rows}\nsink: {type: test-file, path: x}\n"
    assert parse_spec(fine, registry=reg, env={}).sink.type == "test-file"
    with pytest.raises(SpecError) as info:
        parse_spec(fine.replace("test-file, path: x", "loose"), file="p.yaml", registry=reg, env={})
    assert str(info.value) == (
        "p.yaml:4:14: sink.type: the sink plugin 'loose' is broken: its config model "
        "LooseConfig must declare type: Literal['loose']"
    )


def test_unknown_keys_in_nested_sections_list_that_sections_keys() -> None:
    (line,) = problems(
        """\
        version: 1
        name: p
        source: {type: test-rows}
        sink: {type: test-file, path: x}
        retry:
          attempts: 2
          max_dealy: 5s
        """
    )
    assert line == (
        "p.yaml:7:3: retry.max_dealy: unknown key (did you mean 'max_delay'? allowed: attempts,"
        " backoff, deadline, initial_delay, jitter, max_delay)"
    )
