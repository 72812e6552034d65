"""The pipeline through a real one-node SLURM cluster gives the local run's results, byte for byte.

The cluster is the one scripts/slurm-local.sh manages (config /etc/slurm/slurm.conf, files under
HEADSIEVE_SLURM_DIR or /tmp/headsieve-slurm). The session fixture uses a cluster that script already
started (CI starts it) and leaves it running; otherwise it starts one (root only) and stops it at the end.

Without SLURM the tests skip with the reason. Environment:
  HEADSIEVE_SLURM_INSTALL=1   install SLURM first when sinfo/slurmctld are missing
                              (scripts/slurm-local.sh install: apt-get, root). Off by default: the
                              test suite does not install system packages unless asked to.
  HEADSIEVE_SLURM_REQUIRED=1  fail instead of skipping when the cluster cannot be had (CI).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from support.workflow import REPO, sample_config, snakemake, write_config

pytestmark = pytest.mark.slurm

SCRIPT = REPO / "scripts" / "slurm-local.sh"
PROFILE = REPO / "workflow" / "profiles" / "slurm"
SLURM_CONF = "/etc/slurm/slurm.conf"  # the jobstep plugin drops SLURM_CONF; the default path must hold it
RULES = ("tokenize", "dump_attention", "score_roles", "test_roles", "report_roles")
SBIN_PATH = f"{os.environ.get('PATH', '')}{os.pathsep}/usr/sbin{os.pathsep}/sbin"


def _unavailable(reason: str):
    if os.environ.get("HEADSIEVE_SLURM_REQUIRED") == "1":
        pytest.fail(f"{reason} (HEADSIEVE_SLURM_REQUIRED=1)")
    pytest.skip(reason)


def _installed() -> bool:
    return all(shutil.which(tool, path=SBIN_PATH) for tool in ("sinfo", "sbatch", "squeue", "slurmctld", "slurmd"))


def _script(command: str, timeout: int = 180) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), command], capture_output=True, text=True, timeout=timeout)


def _last_line(proc: subprocess.CompletedProcess) -> str:
    lines = (proc.stderr or proc.stdout or "").strip().splitlines()
    return lines[-1] if lines else f"exit status {proc.returncode}"


def _need_plugin():
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        _unavailable("snakemake-executor-plugin-slurm is not installed (pip install -e '.[workflow]')")


@pytest.fixture(scope="session")
def slurm_cluster():
    """A running one-node cluster from scripts/slurm-local.sh."""
    _need_plugin()
    if not _installed():
        if os.environ.get("HEADSIEVE_SLURM_INSTALL") != "1":
            _unavailable(
                "SLURM is not installed (sinfo/slurmctld not found): run `scripts/slurm-local.sh install` "
                "as root, or set HEADSIEVE_SLURM_INSTALL=1"
            )
        proc = _script("install", timeout=900)
        if proc.returncode != 0 or not _installed():
            _unavailable(f"could not install SLURM: {_last_line(proc)}")
    if _script("status").returncode == 0:
        yield  # started before the tests (CI): leave it running
        return
    if os.geteuid() != 0:
        _unavailable("the local SLURM cluster is not running and starting it needs root (scripts/slurm-local.sh start)")
    proc = _script("start")
    if proc.returncode != 0:
        _script("stop")
        _unavailable(f"the local SLURM cluster did not start: {_last_line(proc)}")
    try:
        yield
    finally:
        _script("stop")


def _env_without_venv_on_path() -> dict:
    """The environment a cluster user has who did not activate the venv: its bin folder is not on PATH.

    Snakemake runs from the venv's python; workflow/rules/common.smk then puts the venv's bin folder on
    PATH, and sbatch --export=ALL must carry that PATH to the jobs, which call `headsieve`.
    """
    venv_bin = os.path.normpath(Path(sys.executable).parent)
    path = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and os.path.normpath(p) != venv_bin]
    env = dict(os.environ, PATH=os.pathsep.join(path), HF_HUB_OFFLINE="1", SLURM_CONF=SLURM_CONF)
    return env


def _results(workdir: Path) -> dict[str, Path]:
    root = workdir / "results"
    return {str(p.relative_to(root)): p for p in sorted(root.rglob("*")) if p.is_file()}


def test_slurm_profile_dry_run(tmp_path, data):
    """The profile parses with this snakemake and groups the small evaluation jobs."""
    _need_plugin()
    config = write_config(tmp_path, sample_config(data, n=5, roles={"models": ["minilm"], "corpora": ["ewt"]}))
    proc = snakemake(tmp_path, "--workflow-profile", str(PROFILE), "-n", config=config)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert f"Using workflow specific profile {PROFILE}" in out
    assert "Group job roles_eval" in out
    for rule in RULES:
        assert f"rule {rule}:" in out


def test_pipeline_through_slurm_matches_local(slurm_cluster, tmp_path, data):
    config = sample_config(data, n=20, roles={"models": ["minilm"], "corpora": ["ewt"]})
    local_dir, slurm_dir = tmp_path / "local", tmp_path / "slurm"
    local_config, slurm_config = write_config(local_dir, config), write_config(slurm_dir, config)

    env = _env_without_venv_on_path()
    cmd = [
        sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(slurm_dir),
        "--workflow-profile", str(PROFILE),
        "--executor", "slurm", "--jobs", "2",
        # no accounting database here: squeue for status (MinJobAge 300), and poll early
        "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "1",
        "--slurm-keep-successful-logs", "--latency-wait", "5",
        "--default-resources", "runtime=5", "mem_mb=1000",
        # CI machines may have less memory than the rules ask for (8 GB); SLURM does not enforce it
        # here (jobacct_gather/none), so ask for little and let the jobs fit any node
        "--set-resources", *[f"{rule}:mem_mb=1000" for rule in RULES],
        "--configfile", str(slurm_config),
    ]  # fmt: skip
    out_file = tmp_path / "slurm-snakemake.out"
    with out_file.open("w") as out:
        # SLURM jobs spend most of their time waiting for the status poll: run the local one meanwhile
        slurm = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path)
        try:
            local = snakemake(local_dir, config=local_config)
            slurm_rc = slurm.wait(timeout=300)
        finally:
            if slurm.poll() is None:
                slurm.kill()
    slurm_out = out_file.read_text()
    assert local.returncode == 0, local.stderr[-3000:]
    assert slurm_rc == 0, slurm_out[-4000:]

    # the jobs went through SLURM: submitted, completed on the node, in this working directory
    job_ids = re.findall(r"has been submitted with SLURM jobid (\d+)", slurm_out)
    assert len(job_ids) == 4, slurm_out[-4000:]  # tokenize, dump_attention, score_roles, group roles_eval
    assert "Group job roles_eval" in slurm_out
    for job_id in job_ids:
        show = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True, env=env)
        assert show.returncode == 0, show.stderr  # kept by slurmctld for MinJobAge (300 s) after the end
        fields = dict(f.split("=", 1) for f in show.stdout.split() if "=" in f)
        assert fields["JobState"] == "COMPLETED" and fields["ExitCode"] == "0:0", show.stdout
        assert fields["NodeList"] == "localhost" and fields["WorkDir"] == str(slurm_dir), show.stdout
        logs = list((slurm_dir / ".snakemake" / "slurm_logs").rglob(f"{job_id}.log"))
        assert len(logs) == 1, f"no SLURM log for job {job_id}"
        assert "Finished jobid" in logs[0].read_text()
    # each rule's `headsieve` command ran in its job (env's PATH lacks the venv's bin folder, so the jobs
    # found the command through the PATH that common.smk set and sbatch --export=ALL carried)
    for rule in RULES:
        assert (slurm_dir / "logs" / "minilm" / "ewt" / f"{rule}.log").stat().st_size > 0

    # same outputs: the tables equal as tables and as bytes, the attention shards too
    local_files, slurm_files = _results(local_dir), _results(slurm_dir)
    assert sorted(slurm_files) == sorted(local_files)
    parquet = [name for name in local_files if name.endswith(".parquet")]
    assert {"minilm/ewt/tokens.parquet", "minilm/ewt/attention/index.parquet"} <= set(parquet)
    assert len(parquet) >= 7
    for name in parquet:
        a, b = pq.read_table(local_files[name]), pq.read_table(slurm_files[name])
        assert a.num_rows > 0 and a.schema.equals(b.schema, check_metadata=True), name
        assert a.to_pandas().equals(b.to_pandas()), name  # NaN where NaN (arrow's equals says NaN != NaN)
        assert local_files[name].read_bytes() == slurm_files[name].read_bytes(), name
    shards = [name for name in local_files if name.endswith(".npz")]
    assert shards
    for name in shards:
        with np.load(local_files[name]) as a, np.load(slurm_files[name]) as b:
            assert sorted(a.files) == sorted(b.files), name
            for key in a.files:
                np.testing.assert_array_equal(a[key], b[key], err_msg=f"{name}:{key}")
    summary = "minilm/ewt/roles/summary.md"
    assert local_files[summary].read_text() == slurm_files[summary].read_text()
