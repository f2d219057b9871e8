"""The observability stack's files, checked by parsing since Docker does not run on CI machines.

Cross-checks ``otel-collector.yaml``, ``exporters/docker-compose.yaml``, ``exporters/prometheus.yaml``,
``exporters/tempo.yaml``, Grafana's provisioning and the AgentRelay dashboard against each other, and the
dashboard's queries against what the library really writes: SQL against the ledger tables of
``agent_relay.ledger.schema``, PromQL against the metric names the collector's Prometheus exporter makes of
``agent_relay.metrics``' instruments.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from agent_relay.ledger import derived, schema
from agent_relay.metrics import Instruments

ROOT = Path(__file__).resolve().parents[2]
EXPORTERS = ROOT / "exporters"
COMPOSE = "exporters/docker-compose.yaml"
DATASOURCES = "exporters/grafana/provisioning/datasources/datasources.yaml"
DASHBOARD_PROVIDERS = "exporters/grafana/provisioning/dashboards/dashboards.yaml"
DASHBOARD = "exporters/grafana/dashboards/agent-relay.json"
COLLECTOR_SERVICE = "otel-collector"

# What the collector's Prometheus exporter makes of the library's instruments (see agent_relay/metrics.py).
COUNTERS = frozenset(
    {
        "agent_relay_tool_calls_total",
        "agent_relay_cost_usd_total",
        "agent_relay_runs_total",
        "agent_relay_budget_exceeded_total",
        "agent_relay_compensations_total",
    }
)
HISTOGRAMS = frozenset({"agent_relay_tool_duration_seconds", "gen_ai_client_token_usage"})
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
METRIC_NAMES = COUNTERS | {h + s for h in HISTOGRAMS for s in HISTOGRAM_SUFFIXES}

# the tables, and the views shipped with them (derived.VIEWS), with their columns
LEDGER_TABLES: dict[str, sa.Table] = {
    t.name: t for t in (schema.agent_runs, schema.tool_calls, schema.tool_call_attempts, *derived.VIEWS)
}


def load(name: str) -> Any:
    return yaml.safe_load((ROOT / name).read_text())


def services() -> dict[str, Any]:
    started: dict[str, Any] = load(COMPOSE)["services"]
    return started


def dashboard() -> dict[str, Any]:
    board: dict[str, Any] = json.loads((ROOT / DASHBOARD).read_text())
    return board


def panels(container: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those inside (collapsed) rows."""
    for panel in container.get("panels", []):
        yield panel
        yield from panels(panel)


def targets(kind: str) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(panel, target) for every query of a datasource type (as the target or its panel names it)."""
    for panel in panels(dashboard()):
        for target in panel.get("targets", []):
            datasource = target.get("datasource") or panel.get("datasource") or {}
            if datasource.get("type") == kind:
                yield panel, target


def host_port(endpoint: str) -> tuple[str, int]:
    """``http://tempo:3200`` / ``tempo:4317`` / ``0.0.0.0:8889`` -> (host, port)."""
    host, _, port = endpoint.split("://")[-1].split("/")[0].rpartition(":")
    return host, int(port)


def port_mappings(service: dict[str, Any]) -> dict[int, int]:
    """{published host port: container port} of a compose service (short and long syntax)."""
    mappings = {}
    for port in service.get("ports", []):
        if isinstance(port, dict):
            mappings[int(port["published"])] = int(port["target"])
            continue
        parts = str(port).split("/")[0].split(":")
        assert len(parts) >= 2, f"port {port!r} is not published on a fixed host port"
        mappings[int(parts[-2])] = int(parts[-1])
    return mappings


def volume_mounts(service: dict[str, Any]) -> dict[str, str]:
    """{container path: source} of a compose service's volumes (short and long syntax)."""
    mounts = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            mounts[volume["target"]] = volume["source"]
        else:
            source, target = volume.split(":")[:2]
            mounts[target] = source
    return mounts


def provisioned_datasources() -> dict[str, dict[str, Any]]:
    return {ds["uid"]: ds for ds in load(DATASOURCES)["datasources"]}


# --- the collector ------------------------------------------------------------------------------------


def test_every_pipeline_names_defined_components() -> None:
    config = load("otel-collector.yaml")
    pipelines = config["service"]["pipelines"]
    assert {"traces", "metrics"} <= set(pipelines)
    for name, pipeline in pipelines.items():
        assert pipeline.get("receivers") and pipeline.get("exporters"), f"pipeline {name} is incomplete"
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind, []):
                assert component in (config.get(kind) or {}), (
                    f"pipeline {name} uses undefined {kind[:-1]} {component}"
                )
        # the memory limiter must see data before anything else buffers it
        assert pipeline["processors"][0] == "memory_limiter", f"pipeline {name}"
        assert "batch" in pipeline["processors"], f"pipeline {name}"
    traces = set(pipelines["traces"]["exporters"])
    assert {"otlp/jaeger", "otlp/tempo"} <= traces, "traces must reach Jaeger and Tempo"


def test_collector_listens_on_the_otlp_default_ports_the_compose_file_publishes() -> None:
    protocols = load("otel-collector.yaml")["receivers"]["otlp"]["protocols"]
    listening = {host_port(protocols["grpc"]["endpoint"])[1], host_port(protocols["http"]["endpoint"])[1]}
    assert listening == {4317, 4318}, "the OTLP defaults the demo and the SDKs use"
    published = port_mappings(services()[COLLECTOR_SERVICE])
    for port in (4317, 4318):
        assert published.get(port) == port, f"compose must publish {port} as the collector's {port}"


def test_collector_exports_to_services_the_compose_file_starts() -> None:
    config = load("otel-collector.yaml")
    started = services()
    for name, exporter in config["exporters"].items():
        endpoint = exporter.get("endpoint") if isinstance(exporter, dict) else None
        if endpoint and name != "prometheus":  # the prometheus exporter listens; it does not send
            host, _ = host_port(endpoint)
            assert host in started, f"exporter {name} points at {host}, which compose does not start"
    # Tempo receives OTLP gRPC where the collector sends it
    tempo = load("exporters/tempo.yaml")
    tempo_grpc = tempo["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
    assert host_port(tempo_grpc)[1] == host_port(config["exporters"]["otlp/tempo"]["endpoint"])[1]


def test_every_compose_volume_source_exists() -> None:
    compose = load(COMPOSE)
    named = set(compose.get("volumes") or {})
    for service_name, service in compose["services"].items():
        for target, source in volume_mounts(service).items():
            if source.startswith((".", "/")):
                assert (EXPORTERS / source).resolve().exists(), f"{service_name}: {source} does not exist"
            else:
                assert source in named, f"{service_name}: named volume {source} is not declared"
            assert target.startswith("/"), f"{service_name}: mount target {target}"


def test_compose_images_are_pinned() -> None:
    for name, service in services().items():
        image = service["image"]
        tag = image.rpartition(":")[2] if ":" in image.rsplit("/", 1)[-1] else ""
        assert tag and tag != "latest" and "." in tag, f"{name}: pin {image} to a version"


def test_prometheus_scrapes_the_collectors_prometheus_exporter() -> None:
    config = load("otel-collector.yaml")
    metrics = config["service"]["pipelines"]["metrics"]
    assert "prometheus" in metrics["exporters"], "metrics must end in the prometheus exporter"
    host, port = host_port(config["exporters"]["prometheus"]["endpoint"])
    assert host == "0.0.0.0", "the exporter must listen beyond the collector container's loopback"

    scrape = load("exporters/prometheus.yaml")
    collector = f"{COLLECTOR_SERVICE}:{port}"
    jobs = [
        job
        for job in scrape["scrape_configs"]
        if collector in [t for static in job.get("static_configs", []) for t in static["targets"]]
    ]
    assert jobs, f"Prometheus does not scrape the collector's exporter at {collector}"
    for job in jobs:
        assert job.get("scrape_interval", scrape["global"]["scrape_interval"]) == "15s", job["job_name"]

    started = services()
    assert COLLECTOR_SERVICE in started
    prometheus_config = volume_mounts(started["prometheus"]).get("/etc/prometheus/prometheus.yml")
    assert prometheus_config == "./prometheus.yaml", "Prometheus must read exporters/prometheus.yaml"


# --- Grafana -------------------------------------------------------------------------------------------


def test_grafana_datasources_point_at_compose_services() -> None:
    started = services()
    sources = provisioned_datasources()
    expected = {
        "tempo": "tempo",
        "jaeger": "jaeger",
        "prometheus": "prometheus",
        "ledger": "grafana-postgresql-datasource",
    }
    assert {uid: sources[uid]["type"] for uid in expected if uid in sources} == expected
    for uid, ds in sources.items():
        host, port = host_port(ds["url"])
        assert host in started, f"datasource {uid} points at {host}, which compose does not start"
        assert port in port_mappings(started[host]).values(), f"datasource {uid}: {host} has no port {port}"
    tempo_http = load("exporters/tempo.yaml")["server"]["http_listen_port"]
    assert host_port(sources["tempo"]["url"])[1] == tempo_http


def test_ledger_datasource_and_readme_url_match_the_postgres_service() -> None:
    postgres = services()["postgres"]
    env = postgres["environment"]
    ledger = provisioned_datasources()["ledger"]
    assert ledger["user"] == env["POSTGRES_USER"]
    assert ledger["secureJsonData"]["password"] == env["POSTGRES_PASSWORD"]
    assert ledger["jsonData"]["database"] == env["POSTGRES_DB"]
    assert ledger["jsonData"]["sslmode"] == "disable"
    assert "password" not in ledger, "the password belongs in secureJsonData"

    readme = (EXPORTERS / "README.md").read_text()
    found = re.findall(r"AGENT_RELAY_DATABASE_URL=(\S+)", readme)
    assert found, "the README must say where to point AGENT_RELAY_DATABASE_URL"
    for raw in found:
        url = sa.engine.make_url(raw.strip("`'\""))
        assert url.drivername == "postgresql+psycopg"
        assert (url.username, url.password, url.database) == (
            env["POSTGRES_USER"],
            env["POSTGRES_PASSWORD"],
            env["POSTGRES_DB"],
        )
        assert url.host == "localhost" and url.port is not None
        assert port_mappings(postgres).get(url.port) == 5432


def test_grafana_mounts_the_provisioning_and_the_dashboards_it_loads() -> None:
    grafana = services()["grafana"]
    mounts = volume_mounts(grafana)
    provisioning = mounts.get("/etc/grafana/provisioning")
    assert provisioning, "Grafana must get its provisioning at /etc/grafana/provisioning"
    provisioned = {path.resolve() for path in (EXPORTERS / provisioning).glob("*/*.yaml")}
    assert {ROOT / DATASOURCES, ROOT / DASHBOARD_PROVIDERS} <= provisioned

    providers = load(DASHBOARD_PROVIDERS)["providers"]
    paths = [provider["options"]["path"] for provider in providers]
    dashboards = [(EXPORTERS / source).resolve() for target, source in mounts.items() if target in paths]
    assert (ROOT / DASHBOARD).parent in dashboards, f"no provider reads the folder of {DASHBOARD}"

    env = grafana["environment"]
    assert str(env["GF_AUTH_ANONYMOUS_ENABLED"]).lower() == "true"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Admin"
    assert port_mappings(grafana).get(3000) == 3000


def test_dashboard_is_a_grafana_dashboard() -> None:
    board = dashboard()
    assert board["uid"] and board["title"]
    assert 36 <= board["schemaVersion"] <= 41
    ids = [panel["id"] for panel in panels(board)]
    assert ids and len(ids) == len(set(ids)), "panel ids must be unique"
    cells: dict[tuple[int, int], str] = {}
    for panel in panels(board):
        assert panel["type"] and panel["title"], panel.get("id")
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["h"] > 0 and grid["x"] + grid["w"] <= 24, panel[
            "title"
        ]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                other = cells.setdefault((x, y), panel["title"])
                assert other == panel["title"], f"panels {other} and {panel['title']} overlap"
        if panel["type"] != "row":
            assert panel.get("targets"), f"panel {panel['title']} has no query"
            for target in panel["targets"]:
                assert target.get("rawSql") or target.get("expr"), f"panel {panel['title']}: empty query"


def test_every_panel_names_a_provisioned_datasource_by_uid() -> None:
    sources = provisioned_datasources()
    for panel in panels(dashboard()):
        if panel["type"] == "row":
            continue
        title = panel["title"]
        used = [panel.get("datasource")] + [target.get("datasource") for target in panel["targets"]]
        for ref in used:
            assert isinstance(ref, dict) and ref.get("uid"), f"panel {title} must name its datasource by uid"
            assert ref["uid"] in sources, f"panel {title} uses datasource {ref['uid']}, not provisioned"
            assert ref.get("type") == sources[ref["uid"]]["type"], f"panel {title}: wrong type for {ref}"
        for link in data_links(panel):
            if "internal" in link:
                uid = link["internal"]["datasourceUid"]
                assert uid in sources, f"panel {title} links to datasource {uid}, not provisioned"


# --- SQL over the ledger ----------------------------------------------------------------------------------

SQL_KEYWORDS = frozenset(
    (
        *("all", "and", "any", "as", "asc", "between", "by", "case", "desc", "distinct", "else", "end"),
        *("escape", "exists", "false", "filter", "first", "from", "full", "group", "having", "ilike", "in"),
        *("inner", "interval", "is", "join", "last", "left", "like", "limit", "not", "null", "nulls"),
        *("offset", "on", "or", "order", "outer", "over", "partition", "right", "select", "then", "true"),
        *("union", "using", "when", "where", "with"),
    )
)
_SQL_TOKEN = re.compile(
    r"""
      (?P<space>\s+)
    | (?P<comment>--[^\n]*|/\*.*?\*/)
    | (?P<string>'(?:[^']|'')*')
    | (?P<quoted>"(?:[^"]|"")+")
    | (?P<variable>\$\{[^}]*\}|\$\w+)           # Grafana macros ($__timeFilter) and variables (${agent})
    | (?P<cast>::\s*[A-Za-z_]\w*)                # ::numeric
    | (?P<number>\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
    | (?P<name>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)?)  # column, table.column, schema.table
    | (?P<punct><>|<=|>=|!=|\|\||[(),;*=<>!~+\-/%\[\]])
    """,
    re.VERBOSE | re.DOTALL,
)


def sql_tokens(sql: str) -> list[tuple[str, str]]:
    tokens = []
    pos = 0
    while pos < len(sql):
        match = _SQL_TOKEN.match(sql, pos)
        assert match, f"cannot read the SQL at {sql[pos : pos + 20]!r}"
        kind = match.lastgroup or ""
        if kind not in ("space", "comment"):
            tokens.append((kind, match.group()))
        pos = match.end()
    return tokens


def sql_references(sql: str) -> tuple[set[str], set[tuple[str | None, str]]]:
    """(tables, {(table or None, column)}) a query reads: the identifiers that are not SQL keywords,
    function names, type casts, string literals, Grafana macros or aliases the query defines with AS (a
    column's qualifier is resolved to its table where the query names the table ``AS`` it)."""
    tokens = sql_tokens(sql)

    def word(i: int) -> str:
        kind, text = tokens[i]
        return text[1:-1].replace('""', '"') if kind == "quoted" else text

    def lowered(i: int) -> str:
        return tokens[i][1].lower() if 0 <= i < len(tokens) else ""

    aliases = {word(i).lower() for i in range(1, len(tokens)) if lowered(i - 1) == "as"}
    table_aliases = {  # FROM agent_runs AS r
        word(i + 2): word(i).rpartition(".")[2]
        for i in range(1, len(tokens) - 2)
        if lowered(i - 1) in ("from", "join") and lowered(i + 1) == "as"
    }
    tables: set[str] = set()
    columns: set[tuple[str | None, str]] = set()
    for i, (kind, text) in enumerate(tokens):
        if kind not in ("name", "quoted") or (kind == "name" and text.lower() in SQL_KEYWORDS):
            continue
        name = word(i)
        if lowered(i - 1) == "as":
            continue  # an alias the query defines
        if lowered(i - 1) in ("from", "join"):
            qualifier, _, table = name.rpartition(".")
            assert qualifier in ("", "public"), f"table {name} outside the ledger's schema"
            if table.lower() not in aliases:  # a CTE the query defines
                tables.add(table)
            continue
        if kind == "name" and lowered(i + 1) == "(":
            continue  # a function: count(, coalesce(, date_trunc(
        qualifier, _, column = name.rpartition(".") if kind == "name" else ("", "", name)
        if not qualifier and column.lower() in aliases:
            continue  # ORDER BY / GROUP BY an alias
        columns.add((table_aliases.get(qualifier, qualifier) or None, column))
    return tables, columns


def unknown_ledger_references(sql: str) -> list[str]:
    tables, columns = sql_references(sql)
    problems = {f"table {t}" for t in tables if t not in LEDGER_TABLES}
    if not tables:
        problems.add("no ledger table")
    known = {t: {c.name for c in LEDGER_TABLES[t].c} for t in tables if t in LEDGER_TABLES}
    readable = set().union(*known.values()) if known else set()
    for qualifier, column in columns:
        if qualifier is not None and qualifier in known:
            if column not in known[qualifier]:
                problems.add(f"column {qualifier}.{column}")
        elif qualifier is not None and qualifier not in LEDGER_TABLES:
            problems.add(f"qualifier {qualifier} (define table aliases with AS)")
        elif column not in readable:
            problems.add(f"column {column}")
    return sorted(problems)


def test_sql_reference_reading() -> None:
    tables, columns = sql_references(
        'SELECT $__timeGroupAlias(started_at, $__interval), r.status AS metric, count(*) AS "n runs" '
        "FROM public.agent_runs AS r -- status, not 'x'\n"
        "WHERE error_type LIKE '%Budget''Error' AND cost_usd::numeric > 0.5 AND ${agent} = name "
        'GROUP BY 1, metric ORDER BY "n runs" DESC'
    )
    assert tables == {"agent_runs"}
    assert columns == {
        (None, "started_at"),
        ("agent_runs", "status"),
        (None, "error_type"),
        (None, "cost_usd"),
        (None, "name"),
    }
    assert unknown_ledger_references("SELECT run_id, tool_name FROM tool_calls") == []
    assert unknown_ledger_references("SELECT run_id, tool_name FROM agent_runs") == ["column tool_name"]
    assert unknown_ledger_references("SELECT * FROM runs") == ["table runs"]
    assert unknown_ledger_references("SELECT tool_calls.cost FROM tool_calls") == ["column tool_calls.cost"]
    assert unknown_ledger_references(
        "SELECT c.tool_name FROM agent_runs JOIN tool_calls c ON c.run_id = agent_runs.run_id"
    ) == ["column c", "qualifier c (define table aliases with AS)"]
    assert (
        unknown_ledger_references(
            "SELECT r.name, tool_name FROM agent_runs AS r JOIN tool_calls AS c ON c.run_id = r.run_id"
        )
        == []
    )
    assert unknown_ledger_references("SELECT 'agent_runs' AS t") == ["no ledger table"]
    assert unknown_ledger_references(
        "SELECT count(*) FILTER (WHERE status IN ('compensated', 'failed')) AS n FROM agent_runs AS r "
        "WHERE r.error_type IS NOT NULL AND r.phase = 'forward'"
    ) == ["column agent_runs.phase"]


def test_dashboard_sql_queries_only_ledger_tables_and_columns() -> None:
    queries = [
        (panel["title"], target["rawSql"]) for panel, target in targets("grafana-postgresql-datasource")
    ]
    assert len(queries) >= 5, "the runs, cost, budget, compensation and recent-runs panels query the ledger"
    for title, sql in queries:
        assert unknown_ledger_references(sql) == [], f"panel {title}: {sql}"


# --- PromQL over the exported metrics ---------------------------------------------------------------------

_PROMQL_NOT_METRICS = frozenset(
    ("by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset")
)


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not functions, labels, durations or strings)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    expr = re.sub(r"\{[^}]*\}", " ", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", " ", expr)  # range and subquery selectors
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    names = set()
    for match in re.finditer(r"(?<![\w.:$])[A-Za-z_:][\w:]*", expr):
        if expr[match.end() :].lstrip().startswith("("):
            continue  # a function or an aggregation
        if match.group().lower() not in _PROMQL_NOT_METRICS:
            names.add(match.group())
    return names


def prometheus_names(instruments: list[tuple[str, str, str]]) -> set[str]:
    """What the collector's Prometheus exporter calls (kind, name, unit) instruments."""
    units = {"s": "seconds", "ms": "milliseconds", "By": "bytes", "1": ""}
    names = set()
    for kind, name, unit in instruments:
        base = re.sub(r"[^A-Za-z0-9_:]", "_", name)
        assert unit.startswith("{") or unit in units, f"{name}: add the Prometheus suffix of unit {unit}"
        suffix = "" if unit.startswith("{") else units[unit]
        if suffix and not base.endswith("_" + suffix):
            base += "_" + suffix
        names |= {base + "_total"} if kind == "counter" else {base + s for s in HISTOGRAM_SUFFIXES}
    return names


def test_promql_metric_name_reading() -> None:
    assert promql_metric_names(
        "histogram_quantile(0.95, sum by (le, gen_ai_tool_name) "
        '(rate(a_bucket{x="y z",w=~"$v"}[$__rate_interval])))'
        " / on (job) group_left sum(b_total offset 5m) > bool 1e3"
    ) == {"a_bucket", "b_total"}


def test_the_listed_metric_names_are_those_the_library_exports() -> None:
    created: list[tuple[str, str, str]] = []

    class RecordingMeter:
        def __getattr__(self, method: str) -> Any:
            assert method in ("create_counter", "create_histogram"), f"map {method} to Prometheus names"

            def create(name: str, unit: str = "", description: str = "", **_advice: object) -> object:
                created.append((method.removeprefix("create_"), name, unit))
                return object()

            return create

    Instruments(RecordingMeter())  # type: ignore[arg-type]
    assert prometheus_names(created) == METRIC_NAMES


def test_dashboard_prometheus_queries_use_exported_metric_names() -> None:
    queries = [(panel["title"], target["expr"]) for panel, target in targets("prometheus")]
    assert len(queries) >= 4, "tool calls, latency, tokens and compensations come from the metrics"
    used: set[str] = set()
    for title, expr in queries:
        names = promql_metric_names(expr)
        assert names, f"panel {title} selects no metric: {expr}"
        assert names <= METRIC_NAMES, f"panel {title}: {sorted(names - METRIC_NAMES)} are not exported"
        used |= names
    expected = {
        "agent_relay_tool_calls_total",
        "agent_relay_tool_duration_seconds_bucket",
        "gen_ai_client_token_usage_sum",
        "agent_relay_compensations_total",
    }
    assert expected <= used, f"the dashboard lost {sorted(expected - used)}"


# --- the agent and service variables ---------------------------------------------------------------------

AGENT_IN_THE_LEDGER = re.compile(r"\b(?:\w+\.)?name ~ '\^\$\{agent:regex\}\$'")


def label_matchers(expr: str) -> dict[str, str]:
    """{metric: its label matchers} for every metric selector of a PromQL expression."""
    return {m.group(1): m.group(2) for m in re.finditer(r"([A-Za-z_:][\w:]*)\{([^}]*)\}", expr)}


def test_dashboard_variables_choose_agents_and_services_all_by_default() -> None:
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert set(variables) == {"agent", "service"}
    labels = {"service": "job", "agent": "gen_ai_agent_name"}  # service.name becomes the job label
    for name, variable in variables.items():
        assert variable["datasource"]["uid"] in provisioned_datasources()
        assert variable["includeAll"] and variable["multi"] and variable["allValue"] == ".*"
        assert variable["current"]["value"] == ["$__all"], f"${name} must start on All"
        query = variable["query"]["query"]
        assert query == variable["definition"] and query.endswith(f", {labels[name]})")
        metric = query.removeprefix("label_values(").rpartition(",")[0]
        assert promql_metric_names(metric) <= METRIC_NAMES, query
    assert 'job=~"$service"' in variables["agent"]["query"]["query"]  # agents of the chosen services


def test_every_panel_query_uses_the_variables() -> None:
    prometheus = list(targets("prometheus"))
    ledger = list(targets("grafana-postgresql-datasource"))
    assert len(prometheus) + len(ledger) == sum(1 for p in panels(dashboard()) if p["type"] != "row")
    for panel, target in prometheus:
        selectors = label_matchers(target["expr"])
        assert set(selectors) == promql_metric_names(target["expr"]), f"panel {panel['title']}: a bare metric"
        for metric, matchers in selectors.items():
            assert 'job=~"$service"' in matchers and 'gen_ai_agent_name=~"$agent"' in matchers, (
                f"panel {panel['title']}: {metric} ignores $service or $agent"
            )
            if metric == "agent_relay_tool_calls_total":  # replays are not new calls
                assert 'agent_relay_call_origin!="replayed"' in matchers, panel["title"]
    for panel, target in ledger:  # the ledger records no service name: agent only
        assert AGENT_IN_THE_LEDGER.search(target["rawSql"]), f"panel {panel['title']} ignores $agent"
        assert unknown_ledger_references(target["rawSql"]) == []


# --- from a run to its trace ----------------------------------------------------------------------------


def data_links(panel: dict[str, Any], field: str | None = None) -> list[dict[str, Any]]:
    """Data links of a panel's fields (of one field by name, if given)."""
    config = panel.get("fieldConfig", {})
    links = list(config.get("defaults", {}).get("links", [])) if field is None else []
    for override in config.get("overrides", []):
        matcher = override["matcher"]
        if field is None or (matcher["id"] == "byName" and matcher["options"] == field):
            for prop in override["properties"]:
                if prop["id"] == "links":
                    links.extend(prop["value"])
    return links


def test_runs_table_links_each_trace_id_to_its_trace_in_tempo() -> None:
    runs_tables = [
        panel
        for panel, target in targets("grafana-postgresql-datasource")
        if panel["type"] == "table" and sql_references(target["rawSql"])[0] == {"agent_runs"}
    ]
    assert runs_tables, "the dashboard needs a table of runs"
    for panel in runs_tables:
        sql = panel["targets"][0]["rawSql"]
        _, columns = sql_references(sql)
        assert {"run_id", "name", "status", "mode", "cost_usd", "trace_id", "started_at"} <= {
            column for _, column in columns
        }, f"panel {panel['title']}"
        tempo = [
            link
            for link in data_links(panel, "trace_id")
            if link.get("internal", {}).get("datasourceUid") == "tempo"
        ]
        assert tempo, f"panel {panel['title']}: trace_id must link to the tempo datasource"
        for link in tempo:
            assert "${__value.raw}" in json.dumps(link["internal"]["query"]), "the link must carry the id"


@pytest.mark.parametrize("name", [COMPOSE, DATASOURCES, DASHBOARD_PROVIDERS, "exporters/prometheus.yaml"])
def test_yaml_files_parse(name: str) -> None:
    assert isinstance(load(name), dict)
