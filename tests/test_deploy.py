"""The Docker deployment in deploy/: instance config, compose file, workspace and Dockerfile.

No Docker engine (and no `docker compose`) runs on the development machines, and nothing here
connects to Postgres. What can be checked without them is checked with Dagster's own machinery:

- deploy/dagster.yaml goes through `InstanceRef.from_dir` (the loader `DagsterInstance.get()`
  uses, which validates against the instance config schema); the run launcher and the run
  coordinator are rehydrated from it, which validates their config against their own
  `config_type()`; the Postgres section is processed against `pg_config()` with env vars resolved.
- A real `DagsterInstance` is built from the same file (only storage and local paths swapped for a
  temporary directory, since dagster-postgres and /calmops are not here) and its run queue is asked
  whether a second run of the same pipeline is blocked.
- The compose file is parsed with PyYAML; commands are parsed by the real click commands of
  `dagster`, `dagster-webserver` and `dagster-daemon`; the workspace is processed by Dagster's
  workspace schema; everything that must agree between the files is compared.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import shlex
import shutil
import tomllib
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from dagster import DagsterInstance
from dagster._config import process_config
from dagster._core.errors import DagsterInvalidConfigError
from dagster._core.instance.config import dagster_instance_config
from dagster._core.instance.ref import InstanceRef
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster._core.storage.config import pg_config
from dagster._core.storage.dagster_run import DagsterRun
from dagster._core.workspace.config_schema import process_workspace_config
from dagster._utils.tags import TagConcurrencyLimitsCounter
from dagster_docker import DockerRunLauncher
from dagster_docker.utils import DOCKER_CONFIG_SCHEMA

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
DAGSTER_YAML = DEPLOY / "dagster.yaml"
COMPOSE_YML = DEPLOY / "docker-compose.yml"
WORKSPACE_YML = DEPLOY / "workspace.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
README = DEPLOY / "README.md"

PIPELINE_TAG = "calmops/pipeline"
DAGSTER_SERVICES = ("calmops_code", "calmops_webserver", "calmops_daemon")

FAKE_ENV = {
    "CALMOPS_HOME": "/calmops",
    "DAGSTER_POSTGRES_HOST": "pg.example.internal",
    "DAGSTER_POSTGRES_USER": "calmops_user",
    "DAGSTER_POSTGRES_PASSWORD": "s3cret",
    "DAGSTER_POSTGRES_DB": "calmops_db",
}


# --------------------------------------------------------------------------- helpers


def _raw_instance_yaml() -> dict[str, Any]:
    return yaml.safe_load(DAGSTER_YAML.read_text())


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_YML.read_text())


def _env_var_names(node: Any) -> set[str]:
    """Every `{env: NAME}` reference (Dagster's StringSource/IntSource form) in a config tree."""
    found: set[str] = set()
    if isinstance(node, dict):
        if set(node) == {"env"} and isinstance(node["env"], str):
            found.add(node["env"])
        for value in node.values():
            found |= _env_var_names(value)
    elif isinstance(node, list):
        for value in node:
            found |= _env_var_names(value)
    return found


def _instance_dir(tmp_path: Path) -> Path:
    """A DAGSTER_HOME holding deploy/dagster.yaml, byte for byte."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(DAGSTER_YAML, home / "dagster.yaml")
    return home


def _service_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):  # the KEY=VALUE list form
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _interpolate(value: str) -> str:
    """Compose's `${VAR:-default}` with VAR unset: the default (enough to compare defaults)."""
    return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:-([^}]*)\}", r"\1", value)


def _parse_cli(group_or_command: click.Command, argv: list[str]) -> dict[str, Any]:
    """Parse argv with the real click command (no invocation): unknown options or bad values
    raise click.UsageError. Returns the parsed parameters of the leaf command."""
    command, args = group_or_command, list(argv)
    while isinstance(command, click.Group):
        ctx = command.make_context(command.name or "cli", list(args), resilient_parsing=True)
        name, args = args[0], args[1:]
        sub = command.get_command(ctx, name)
        assert sub is not None, f"{name!r} is not a subcommand of {command.name!r}"
        command = sub
    ctx = command.make_context(command.name or "cmd", args)
    return dict(ctx.params)


def _cli_for(executable: str) -> click.Command:
    if executable == "dagster":
        from dagster._cli import cli

        return cli
    if executable == "dagster-webserver":
        from dagster_webserver.cli import cli

        return cli
    if executable == "dagster-daemon":
        from dagster._daemon.cli import create_dagster_daemon_cli

        return create_dagster_daemon_cli()
    raise AssertionError(f"unexpected executable {executable!r}")


def _command_list(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, rest = line.partition(" ")
        out.append((instruction.upper(), rest.strip()))
    return out


@pytest.fixture
def deploy_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for key, value in FAKE_ENV.items():
        monkeypatch.setenv(key, value)
    return FAKE_ENV


# --------------------------------------------------------------------------- dagster.yaml


def test_instance_yaml_validates_against_dagster_schema(tmp_path: Path, deploy_env) -> None:
    config, custom_class = dagster_instance_config(str(_instance_dir(tmp_path)))
    assert custom_class is None
    assert set(config["storage"]) == {"postgres"}
    assert config["run_launcher"]["class"] == "DockerRunLauncher"
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"


def test_storage_is_postgres_for_runs_event_logs_and_schedules(tmp_path: Path, deploy_env) -> None:
    ref = InstanceRef.from_dir(str(_instance_dir(tmp_path)))
    assert (ref.storage_data.module_name, ref.storage_data.class_name) == (
        "dagster_postgres",
        "DagsterPostgresStorage",
    )
    assert ref.run_storage_data.class_name == "PostgresRunStorage"
    assert ref.event_storage_data.class_name == "PostgresEventLogStorage"
    assert ref.schedule_storage_data.class_name == "PostgresScheduleStorage"

    # The exact config DagsterPostgresStorage would receive, processed by its schema with the
    # env vars resolved (dagster-postgres itself is only installed in the image).
    result = process_config(pg_config(), yaml.safe_load(ref.storage_data.config_yaml))
    assert result.success, result.errors
    db = result.value["postgres_db"]
    assert db["hostname"] == deploy_env["DAGSTER_POSTGRES_HOST"]
    assert db["username"] == deploy_env["DAGSTER_POSTGRES_USER"]
    assert db["password"] == deploy_env["DAGSTER_POSTGRES_PASSWORD"]
    assert db["db_name"] == deploy_env["DAGSTER_POSTGRES_DB"]
    assert db["port"] == 5432


def test_postgres_credentials_are_not_baked_into_the_file() -> None:
    db = _raw_instance_yaml()["storage"]["postgres"]["postgres_db"]
    for field in ("hostname", "username", "password", "db_name"):
        assert isinstance(db[field], dict) and set(db[field]) == {"env"}, field


def test_postgres_config_fails_without_its_env_vars(tmp_path: Path, monkeypatch) -> None:
    for key in FAKE_ENV:
        monkeypatch.delenv(key, raising=False)
    ref = InstanceRef.from_dir(str(_instance_dir(tmp_path)))
    result = process_config(pg_config(), yaml.safe_load(ref.storage_data.config_yaml))
    assert not result.success
    assert "DAGSTER_POSTGRES_" in " ".join(str(e.message) for e in result.errors)


def test_run_launcher_is_docker_and_its_config_validates(tmp_path: Path, deploy_env) -> None:
    ref = InstanceRef.from_dir(str(_instance_dir(tmp_path)))
    assert (ref.run_launcher_data.module_name, ref.run_launcher_data.class_name) == (
        "dagster_docker",
        "DockerRunLauncher",
    )
    launcher_config = yaml.safe_load(ref.run_launcher_data.config_yaml)
    result = process_config(DockerRunLauncher.config_type(), launcher_config)
    assert result.success, result.errors
    assert DockerRunLauncher.config_type() is DOCKER_CONFIG_SCHEMA

    # rehydrate = import the class, validate against config_type(), construct (no Docker call).
    launcher = ref.run_launcher_data.rehydrate(DockerRunLauncher)
    assert isinstance(launcher, DockerRunLauncher)
    assert launcher.networks == ["calmops_network"]
    assert launcher.image is None  # taken from the code location (DAGSTER_CURRENT_IMAGE)
    assert "calmops_home:/calmops" in launcher.container_kwargs["volumes"]


def test_run_containers_receive_every_env_var_the_instance_needs() -> None:
    raw = _raw_instance_yaml()
    needed = _env_var_names(raw) | {"CALMOPS_HOME"}
    forwarded = {e.split("=", 1)[0] for e in raw["run_launcher"]["config"]["env_vars"]}
    assert needed <= forwarded, f"not forwarded to run containers: {sorted(needed - forwarded)}"


@pytest.mark.parametrize(
    ("path", "bad_value", "why"),
    [
        (("run_launcher", "config", "network_names"), ["x"], "unknown DockerRunLauncher field"),
        (("run_launcher", "config", "networks"), "calmops_network", "networks must be a list"),
        (("run_coordinator", "config", "max_concurrent_runs"), "many", "not an int"),
    ],
)
def test_validation_is_real_a_broken_launcher_or_coordinator_is_rejected(
    tmp_path: Path, deploy_env, path, bad_value, why
) -> None:
    raw = _raw_instance_yaml()
    node = raw
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = bad_value
    home = tmp_path / "broken"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(raw))
    ref = InstanceRef.from_dir(str(home))  # Permissive at instance level ...
    data = ref.run_launcher_data if path[0] == "run_launcher" else ref.run_coordinator_data
    with pytest.raises(DagsterInvalidConfigError):  # ... rejected by the class's own schema
        data.rehydrate()


def test_broken_storage_is_rejected_by_the_instance_schema(tmp_path: Path, deploy_env) -> None:
    raw = _raw_instance_yaml()
    raw["storage"]["postgres"]["postgres_db"]["hostnam"] = raw["storage"]["postgres"]["postgres_db"].pop(
        "hostname"
    )
    home = tmp_path / "broken"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(DagsterInvalidConfigError):
        InstanceRef.from_dir(str(home))


def test_run_coordinator_limits_each_pipeline_to_one_run(tmp_path: Path, deploy_env) -> None:
    ref = InstanceRef.from_dir(str(_instance_dir(tmp_path)))
    coordinator = ref.run_coordinator_data.rehydrate(QueuedRunCoordinator)
    limits = coordinator.get_run_queue_config().tag_concurrency_limits
    assert {"key": PIPELINE_TAG, "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in limits


def test_real_instance_wires_launcher_and_queue_and_blocks_a_second_run_of_a_pipeline(
    tmp_path: Path, deploy_env
) -> None:
    # Same dagster.yaml; only what cannot exist here is swapped: Postgres (dagster-postgres is
    # in the image only) and the /calmops paths (the shared volume).
    overrides = {
        "storage": {"sqlite": {"base_dir": str(tmp_path / "storage")}},
        "local_artifact_storage": {
            "module": "dagster._core.storage.root",
            "class": "LocalArtifactStorage",
            "config": {"base_dir": str(tmp_path / "artifacts")},
        },
        "compute_logs": {
            "module": "dagster._core.storage.local_compute_log_manager",
            "class": "LocalComputeLogManager",
            "config": {"base_dir": str(tmp_path / "compute_logs")},
        },
    }
    ref = InstanceRef.from_dir(str(_instance_dir(tmp_path)), overrides=overrides)
    with DagsterInstance.from_ref(ref) as instance:
        assert isinstance(instance.run_launcher, DockerRunLauncher)
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        queue = instance.get_concurrency_config().run_queue_config
        assert queue is not None

        def run(pipeline: str) -> DagsterRun:
            return DagsterRun(job_name=f"{pipeline}_job", tags={PIPELINE_TAG: pipeline})

        in_progress = [run("churn")]
        counter = TagConcurrencyLimitsCounter(list(queue.tag_concurrency_limits), in_progress)
        assert counter.is_blocked(run("churn")), "a second run of the same pipeline must wait"
        assert not counter.is_blocked(run("fraud")), "other pipelines run in parallel"
        assert queue.max_concurrent_runs > 1


def test_shared_paths_live_on_the_volume_mounted_into_run_containers() -> None:
    raw = _raw_instance_yaml()
    mounts = {}
    for spec in raw["run_launcher"]["config"]["container_kwargs"]["volumes"]:
        volume, target = spec.split(":")[:2]
        mounts[volume] = target
    calmops_mount = mounts["calmops_home"]
    for section in ("local_artifact_storage", "compute_logs"):
        base_dir = raw[section]["config"]["base_dir"]
        assert Path(base_dir).is_relative_to(calmops_mount), (section, base_dir)


# --------------------------------------------------------------------------- compose + workspace


def test_compose_has_the_four_services_on_one_network() -> None:
    compose = _compose()
    services = compose["services"]
    assert set(services) == {"calmops_postgres", *DAGSTER_SERVICES}
    assert services["calmops_postgres"]["image"].startswith("postgres:")
    network_keys = set(compose["networks"])
    for name, service in services.items():
        assert set(service["networks"]) & network_keys, name


def test_postgres_has_a_healthcheck_and_dagster_services_wait_for_it() -> None:
    services = _compose()["services"]
    health = services["calmops_postgres"]["healthcheck"]
    assert "pg_isready" in " ".join(health["test"])
    for name in DAGSTER_SERVICES:
        assert services[name]["depends_on"]["calmops_postgres"]["condition"] == "service_healthy"
    for name in ("calmops_webserver", "calmops_daemon"):
        assert services[name]["depends_on"]["calmops_code"]["condition"] == "service_healthy"


def test_workspace_points_at_the_code_location_service() -> None:
    workspace = yaml.safe_load(WORKSPACE_YML.read_text())
    result = process_workspace_config(workspace)
    assert result.success, result.errors
    [entry] = workspace["load_from"]
    grpc = entry["grpc_server"]

    code = _compose()["services"]["calmops_code"]
    assert grpc["host"] in {"calmops_code", code.get("container_name")}

    argv = _command_list(code)
    params = _parse_cli(_cli_for(argv[0]), argv[1:])
    assert params["port"] == grpc["port"]
    assert params["host"] == "0.0.0.0"
    assert params["module_name"] == "calmops_dagster.definitions"
    assert params["location_name"] == grpc["location_name"]

    # the code server's health check asks the same port
    health = code["healthcheck"]["test"]
    assert health[health.index("-p") + 1] == str(grpc["port"])


def test_webserver_and_daemon_commands_parse_and_use_the_deploy_workspace() -> None:
    services = _compose()["services"]
    # The image copies the repository to WORKDIR; map that prefix back to the checkout so click's
    # own `exists=True` check on -w looks at the file the image will contain.
    workdir = next(arg for ins, arg in _dockerfile_instructions() if ins == "WORKDIR")
    in_image = str(Path(workdir) / WORKSPACE_YML.relative_to(REPO))
    for name in ("calmops_webserver", "calmops_daemon"):
        argv = _command_list(services[name])
        assert in_image in argv, name
        local_argv = [str(WORKSPACE_YML) if a == in_image else a for a in argv]
        params = _parse_cli(_cli_for(argv[0]), local_argv[1:])
        assert params["workspace"] == (str(WORKSPACE_YML),), name
    assert "3000:3000" in services["calmops_webserver"]["ports"]


def test_every_env_var_of_the_instance_reaches_webserver_daemon_and_code() -> None:
    services = _compose()["services"]
    needed = _env_var_names(_raw_instance_yaml()) | {"CALMOPS_HOME", "DAGSTER_HOME"}
    for name in DAGSTER_SERVICES:
        missing = needed - set(_service_env(services[name]))
        assert not missing, f"{name} lacks {sorted(missing)}"


def test_postgres_env_agrees_between_the_database_and_dagster() -> None:
    services = _compose()["services"]
    pg = _service_env(services["calmops_postgres"])
    for name in DAGSTER_SERVICES:
        env = _service_env(services[name])
        assert env["DAGSTER_POSTGRES_HOST"] in {
            "calmops_postgres",
            services["calmops_postgres"].get("container_name"),
        }
        assert _interpolate(env["DAGSTER_POSTGRES_USER"]) == _interpolate(pg["POSTGRES_USER"])
        assert _interpolate(env["DAGSTER_POSTGRES_PASSWORD"]) == _interpolate(pg["POSTGRES_PASSWORD"])
        assert _interpolate(env["DAGSTER_POSTGRES_DB"]) == _interpolate(pg["POSTGRES_DB"])


def test_launcher_network_and_volume_exist_in_compose_under_fixed_names() -> None:
    compose = _compose()
    launcher = _raw_instance_yaml()["run_launcher"]["config"]
    network_names = {cfg.get("name") for cfg in compose["networks"].values()}
    assert set(launcher["networks"]) <= network_names
    volume_names = {cfg.get("name"): key for key, cfg in compose["volumes"].items()}

    for spec in launcher["container_kwargs"]["volumes"]:
        volume, target = spec.split(":")[:2]
        assert volume in volume_names, f"{volume} is not a fixed-name compose volume"
        # every dagster service mounts it at the same place, and CALMOPS_HOME says so
        for name in DAGSTER_SERVICES:
            service = compose["services"][name]
            assert f"{volume_names[volume]}:{target}" in service["volumes"], name
            assert _service_env(service)["CALMOPS_HOME"] == target


def test_daemon_and_webserver_reach_the_docker_engine() -> None:
    services = _compose()["services"]
    for name in ("calmops_webserver", "calmops_daemon"):
        assert "/var/run/docker.sock:/var/run/docker.sock" in services[name]["volumes"], name


def test_runs_use_the_code_location_image() -> None:
    services = _compose()["services"]
    code = services["calmops_code"]
    assert _service_env(code)["DAGSTER_CURRENT_IMAGE"] == code["image"]
    for name in DAGSTER_SERVICES:
        assert services[name]["build"]["dockerfile"] == "deploy/Dockerfile"
        assert (COMPOSE_YML.parent / services[name]["build"]["context"] / "pyproject.toml").is_file()


# --------------------------------------------------------------------------- Dockerfile


def test_dockerfile_installs_cpu_torch_first_then_the_project() -> None:
    instructions = _dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    runs = [arg for ins, arg in instructions if ins == "RUN"]
    torch_idx = next(i for i, r in enumerate(runs) if re.search(r"pip install \"?torch==", r))
    project_idx = next(i for i, r in enumerate(runs) if '".[docker]"' in r or " .[docker]" in r)
    assert torch_idx < project_idx
    assert "--index-url" in runs[torch_idx]
    args = {a.split("=", 1)[0]: a.split("=", 1)[1] for ins, a in instructions if ins == "ARG"}
    assert args["TORCH_VERSION"] == "2.13.0"
    assert args["TORCH_INDEX_URL"].endswith("/whl/cpu")

    # dagster-postgres is pinned to the same release line as the installed dagster-docker
    pin = re.search(r"dagster-postgres==([\w.]+)", runs[project_idx])
    assert pin and pin.group(1) == importlib.metadata.version("dagster-docker")

    # and the `docker` extra it installs really carries dagster-docker
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(dep.startswith("dagster-docker") for dep in extras["docker"])


def test_dockerfile_cmd_is_the_code_server_compose_runs() -> None:
    instructions = _dockerfile_instructions()
    cmd = json.loads(next(arg for ins, arg in instructions if ins == "CMD"))
    assert cmd == _command_list(_compose()["services"]["calmops_code"])
    params = _parse_cli(_cli_for(cmd[0]), cmd[1:])
    assert params["attribute"] == "defs"


def test_dockerfile_puts_the_instance_config_where_compose_points_dagster_home() -> None:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    assert re.search(r"cp deploy/dagster\.yaml \"?\$\{DAGSTER_HOME\}\"?/dagster\.yaml", text)
    env_line = next(arg for ins, arg in _dockerfile_instructions() if ins == "ENV" and "DAGSTER_HOME" in arg)
    image_home = re.search(r"DAGSTER_HOME=(\S+)", env_line).group(1)
    for name in DAGSTER_SERVICES:
        assert _service_env(_compose()["services"][name])["DAGSTER_HOME"] == image_home


def test_readme_says_how_to_run_and_how_it_scales() -> None:
    text = README.read_text()
    assert "docker compose" in text
    assert "dagster-k8s" in text
    assert "one run per container" in text.lower()
