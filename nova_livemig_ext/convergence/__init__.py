"""The pure convergence core: samples in, decisions with reasons out.

Nothing in this package imports libvirt, Nova or oslo, or reads a clock:

* :mod:`.samples` turns a libvirt jobStats dict into a typed sample;
* :mod:`.estimator` tracks bandwidth, dirty rate and working set and
  predicts downtime and completion from the pre-copy model;
* :mod:`.controller` detects stalls and climbs the escalation ladder, one
  rule a file (:mod:`.stall`, :mod:`.link`, :mod:`.deadline`,
  :mod:`.ladder`, :mod:`.pricing`, :mod:`.rungs`);
* :mod:`.upstream` makes the decisions Nova 34 makes, for comparison;
* :mod:`.model` simulates pre-copy for the tests.
"""

from nova_livemig_ext.convergence.controller import Action
from nova_livemig_ext.convergence.controller import Controller
from nova_livemig_ext.convergence.controller import ControllerConfig
from nova_livemig_ext.convergence.controller import Decision
from nova_livemig_ext.convergence.controller import DecisionMaker
from nova_livemig_ext.convergence.controller import migration_deadline_s
from nova_livemig_ext.convergence.samples import JobSample
from nova_livemig_ext.convergence.samples import JobType
from nova_livemig_ext.convergence.samples import sample_from_job_stats
from nova_livemig_ext.convergence.upstream import UpstreamConfig
from nova_livemig_ext.convergence.upstream import UpstreamController

__all__ = [
    'Action',
    'Controller',
    'ControllerConfig',
    'Decision',
    'DecisionMaker',
    'JobSample',
    'JobType',
    'UpstreamConfig',
    'UpstreamController',
    'migration_deadline_s',
    'sample_from_job_stats',
]
