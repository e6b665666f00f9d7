"""The experiment machinery: training runs as one-thread jobs, in dependency order, parallel or not alike."""

import os
import subprocess
import sys

import pytest

from meap.errors import UserError
from meap.experiments.runner import PORTABLE_NUMERICS, Job, run_jobs
from meap.rundir import RunDir, without_timing

from conftest import read_metrics, tiny_config


def _jobs(prepared, root):
    shape = dict(max_steps=4, save_every=2, eval_every=2, keep_checkpoints=0)
    start = tiny_config(prepared, root / "start", seed=1, **shape)
    branch = tiny_config(prepared, root / "branch", seed=2, model=str(root / "start" / "final"), **shape)
    other = tiny_config(prepared, root / "other", seed=3, objective="ntp", **shape)
    return [
        Job("start", "pretrain", start),
        Job("branch", "pretrain", branch, after=["start"]),
        Job("other", "pretrain", other),
    ]


def test_parallel_jobs_give_the_runs_that_sequential_jobs_give(prepared, tmp_path):
    run_jobs(_jobs(prepared, tmp_path / "one"), parallel=1, progress=False)
    run_jobs(_jobs(prepared, tmp_path / "two"), parallel=2, progress=False)
    for name in ("start", "branch", "other"):
        one, two = read_metrics(tmp_path / "one" / name), read_metrics(tmp_path / "two" / name)
        assert one and without_timing(one) == without_timing(two), name
    assert read_metrics(tmp_path / "one" / "branch") != read_metrics(tmp_path / "one" / "other")
    assert (tmp_path / "one" / "branch.job.yaml").is_file() and (tmp_path / "one" / "branch.log").is_file()
    # each job records the kernels it computed with (the tests compute as `numerics: portable` does)
    numerics = RunDir(tmp_path / "two" / "branch").read_facts()["machine"]["numerics"]
    assert numerics == {"cpu_capability": "AVX2", "mkl_cbwr": PORTABLE_NUMERICS["MKL_CBWR"]}
    # finished jobs are not run again
    before = (tmp_path / "two" / "branch" / "metrics.jsonl").read_text()
    run_jobs(_jobs(prepared, tmp_path / "two"), parallel=2, progress=False)
    assert (tmp_path / "two" / "branch" / "metrics.jsonl").read_text() == before


def _fresh_python(code: str, **environment: str) -> subprocess.CompletedProcess:
    """``code`` in a new interpreter whose environment lacks the portable settings (plus ``environment``)."""
    clean = {key: value for key, value in os.environ.items() if key not in PORTABLE_NUMERICS}
    return subprocess.run([sys.executable, "-c", code], env={**clean, **environment}, capture_output=True, text=True)


def test_portable_numerics_reach_the_experiment_and_its_jobs_or_are_refused():
    pinned = _fresh_python(
        "from meap.experiments.config import DemoConfig\n"
        "from meap.experiments.runner import _environment, pin_numerics\n"
        "pin_numerics(DemoConfig())\n"
        "import torch\n"
        "print(torch.backends.cpu.get_cpu_capability(), _environment()['MKL_CBWR'])"
    )
    assert pinned.stdout.split() == ["AVX2", PORTABLE_NUMERICS["MKL_CBWR"]], pinned.stderr
    native = _fresh_python(
        "from meap.experiments.config import DemoConfig\n"
        "from meap.experiments.runner import _environment, pin_numerics\n"
        "pin_numerics(DemoConfig(numerics='native'))\n"
        "print(_environment().get('MKL_CBWR', 'unset'))"
    )
    assert native.stdout.split() == ["unset"], native.stderr
    # torch already computed with other kernels: the experiment cannot honour `portable` and says so
    late = _fresh_python(
        "import torch\n"
        "torch.ones(2) + 1\n"
        "from meap.experiments.config import DemoConfig\n"
        "from meap.experiments.runner import pin_numerics\n"
        "pin_numerics(DemoConfig())",
        ATEN_CPU_CAPABILITY="default",
    )
    assert "numerics: portable needs PyTorch's AVX2 kernels, but this process uses DEFAULT" in late.stderr


def test_an_interrupted_job_resumes_from_its_checkpoint(prepared, tmp_path):
    import shutil

    run_jobs(_jobs(prepared, tmp_path / "full"), parallel=2, progress=False)
    jobs = _jobs(prepared, tmp_path / "cut")
    run_jobs(jobs, parallel=2, progress=False)
    shutil.rmtree(tmp_path / "cut" / "branch" / "final")
    shutil.rmtree(tmp_path / "cut" / "branch" / "checkpoints" / "step-4")  # as if stopped after step 2
    assert jobs[1].argv()[-1] == "--resume"
    run_jobs(jobs, parallel=2, progress=False)
    assert without_timing(read_metrics(tmp_path / "cut" / "branch")) == without_timing(
        read_metrics(tmp_path / "full" / "branch")
    )


def test_a_failing_job_stops_the_experiment_and_names_its_log(prepared, tmp_path):
    jobs = _jobs(prepared, tmp_path)
    jobs[0].config.data = str(tmp_path / "missing")
    with pytest.raises(
        UserError, match=r"training job start failed \(meap: error: .*missing.*\); its log: .*start\.log"
    ):
        run_jobs(jobs, parallel=2, progress=False)
    assert not (tmp_path / "branch").exists()  # it waited for the start that failed
