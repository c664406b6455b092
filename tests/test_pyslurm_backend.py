"""The pyslurm backend's mapping: arguments, errors, trigger return codes, safe import.

pyslurm 25.11 cannot run against this machine's Slurm 22.05, so these tests give the backend
a stand-in module with pyslurm 25.11's names and behaviours as recorded in shared/NOTES.md
(RPCError with .errno; Job.load raising 2017 for unknown ids; cancel raising nothing for
gone jobs; trigger().set returning Slurm errnos instead of raising). What they check is our
mapping onto that API, not pyslurm itself: the contract suite is where a real pyslurm runs.
"""

from __future__ import annotations

import os
import pwd
import sys
import types

import pytest

from carme.daemon.slurm import pyslurm_backend
from carme.daemon.slurm.base import (JobInfo, SlurmPermanent, SlurmTransient, Submission,
                                     TriggerInfo)


class RPCError(Exception):
    def __init__(self, errno: int, msg: str = "rpc failed"):
        super().__init__(msg)
        self.errno = errno


def fake_pyslurm(submit_errno=None, trigger_rc=0, jobs=None, version="25.11.2", ping_errno=None,
                 triggers=None):
    module = types.SimpleNamespace(__version__=version, RPCError=RPCError, calls=[])
    jobs = jobs or {}

    class JobSubmitDescription:
        def __init__(self, **kwargs):
            module.calls.append(("submit", kwargs))

        def submit(self):
            if submit_errno:
                raise RPCError(submit_errno)
            return 42

    class Job:
        def __init__(self, job_id):
            self.job_id = job_id

        @staticmethod
        def load(job_id):
            if job_id not in jobs:
                raise RPCError(2017, "Invalid job id specified")
            return jobs[job_id]

        def cancel(self):
            module.calls.append(("cancel", self.job_id))

    class Jobs:
        @staticmethod
        def load():
            return dict(jobs)

    class trigger:  # noqa: N801 - pyslurm's own name
        def set(self, spec):
            module.calls.append(("trigger", spec))
            return trigger_rc

        def get(self):  # every trigger of the cluster; {} also when the RPC failed
            return dict(triggers or {})

    module.JobSubmitDescription, module.Job, module.Jobs, module.trigger = (
        JobSubmitDescription, Job, Jobs, trigger)
    def ping(index):
        module.calls.append(("ping", index))
        if ping_errno:
            raise RPCError(ping_errno)
        return types.SimpleNamespace(is_responding=True)

    module.slurmctld = types.SimpleNamespace(ping=ping)
    module.slurm_init = lambda conf=None: module.calls.append(("init", conf))
    return module


def job(job_id, name="j", user="carmetest1", state="RUNNING", comment="carme:x"):
    uid = pwd.getpwnam(user).pw_uid if user == "carmetest1" else 54321
    return types.SimpleNamespace(id=job_id, name=name, user_name=user, user_id=uid, state=state,
                                 comment=comment)


SUBMISSION = Submission("carmetest1", "#!/bin/sh\n", "j", "gpu", 1, "gpu:a100:2", 30, "carme:x",
                        "/home/carmetest1", "/home/carmetest1/out")


def test_submit_maps_every_argument_onto_pyslurm_names(test_user):
    module = fake_pyslurm()
    assert pyslurm_backend.PyslurmBackend(module).submit(SUBMISSION) == 42
    (_, kwargs), = [c for c in module.calls if c[0] == "submit"]
    assert kwargs == {"name": "j", "script": "#!/bin/sh\n", "partitions": "gpu", "nodes": 1,
                      "user_id": test_user["uid"], "group_id": test_user["gid"],
                      "working_directory": "/home/carmetest1", "standard_output": "/home/carmetest1/out",
                      "comment": "carme:x", "environment": "NONE", "gres_per_node": "gpu:a100:2",
                      "time_limit": 30}


@pytest.mark.parametrize("errno,cls,code", [
    (2000, SlurmPermanent, "invalid_partition"), (2014, SlurmPermanent, "invalid_resources"),
    (2072, SlurmPermanent, "invalid_resources"), (1800, SlurmTransient, "controller_unreachable"),
    (9999, SlurmPermanent, "slurm_error"),
])
def test_rpc_errors_become_typed_errors(errno, cls, code):
    with pytest.raises(cls) as info:
        pyslurm_backend.PyslurmBackend(fake_pyslurm(submit_errno=errno)).submit(SUBMISSION)
    assert info.value.code == code and str(errno) in info.value.message


def test_unknown_user_is_permanent_before_slurm_is_asked():
    module = fake_pyslurm()
    with pytest.raises(SlurmPermanent) as info:
        pyslurm_backend.PyslurmBackend(module).submit(
            Submission("nosuchuser", "", "j", "gpu", 1, None, None, "", "/", "/o"))
    assert info.value.code == "invalid_user" and module.calls == []


def test_find_job_cancel():
    module = fake_pyslurm(jobs={5: job(5), 6: job(6, name="other"), 7: job(7, user="bob"),
                                8: job(8, state="COMPLETED")})
    backend = pyslurm_backend.PyslurmBackend(module)
    assert [j.job_id for j in backend.active_jobs("carmetest1")] == [5, 6]
    assert backend.job(5).active and backend.job(99) is None
    backend.cancel(99)  # gone: success
    assert ("cancel", 99) in module.calls


def test_a_lister_answers_active_jobs_instead_of_loading_the_cluster():
    class Lister:  # open_backend passes the CLI backend (squeue --user)
        def active_jobs(self, user):
            return [JobInfo(9, "j", user, "RUNNING")]

    module = fake_pyslurm(jobs={5: job(5)})
    module.Jobs.load = lambda: pytest.fail("the whole cluster was loaded")
    backend = pyslurm_backend.PyslurmBackend(module, lister=Lister())
    assert [j.job_id for j in backend.active_jobs("carmetest1")] == [9]


@pytest.mark.parametrize("rc,code", [(2017, "invalid_job_id"), (2021, "job_finished"),
                                     (2089, "duplicate_trigger")])
def test_trigger_return_codes_are_errors(rc, code):
    backend = pyslurm_backend.PyslurmBackend(fake_pyslurm(trigger_rc=rc))
    with pytest.raises(SlurmPermanent) as info:
        backend.trigger(5, "fini", ["/hook", "trigger", "finished"])
    assert info.value.code == code


def test_triggers_of_a_job_from_the_clusters_list():
    def record(trig_id, res_type, res_id, trig_type, program):
        return {"trig_id": trig_id, "res_type": res_type, "res_id": res_id, "trig_type": trig_type,
                "offset": 0, "flags": 0, "user_id": 0, "program": program}
    backend = pyslurm_backend.PyslurmBackend(fake_pyslurm(triggers={
        1: record(1, 1, "5", 0x10, "/hook trigger finished a j"),
        2: record(2, 1, "5", 0x08, "/hook trigger ending_soon a j"),
        3: record(3, 1, "6", 0x10, "/hook trigger finished a k"),   # another job
        4: record(4, 2, "n1", 0x02, "/x"),                          # a node trigger
    }))
    assert backend.triggers(5) == [TriggerInfo(1, "fini", "/hook trigger finished a j"),
                                   TriggerInfo(2, "time", "/hook trigger ending_soon a j")]


def test_trigger_specs():
    module = fake_pyslurm()
    backend = pyslurm_backend.PyslurmBackend(module)
    backend.trigger(5, "fini", ["/hook", "trigger", "finished"])
    backend.trigger(5, "time", ["/hook", "trigger", "ending_soon"], offset_seconds=900)
    specs = [c[1] for c in module.calls if c[0] == "trigger"]
    assert specs == [{"jobid": 5, "event": "fini", "fini": True, "program": "/hook trigger finished"},
                     {"jobid": 5, "event": "time", "offset": -900, "program": "/hook trigger ending_soon"}]


def test_ping_asks_the_primary_controller_and_not_for_every_job():
    module = fake_pyslurm()
    assert pyslurm_backend.PyslurmBackend(module).ping() is True
    assert module.calls == [("ping", 0)]
    assert pyslurm_backend.PyslurmBackend(fake_pyslurm(ping_errno=1800)).ping() is False


def test_load_refuses_an_unreadable_config_before_importing(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyslurm", fake_pyslurm())
    with pytest.raises(ImportError, match="not readable"):
        pyslurm_backend.load_pyslurm(str(tmp_path / "missing.conf"))


def test_load_disables_auto_init_then_initialises_with_the_conf(tmp_path, monkeypatch):
    conf = tmp_path / "slurm.conf"
    conf.write_text("")
    module = fake_pyslurm()
    monkeypatch.setitem(sys.modules, "pyslurm", module)
    monkeypatch.delenv("PYSLURM_DISABLE_AUTO_INIT", raising=False)
    assert pyslurm_backend.load_pyslurm(str(conf)) is module
    assert module.calls == [("init", str(conf))]
    assert os.environ["PYSLURM_DISABLE_AUTO_INIT"] == "1"
