"""RelayGuard's test lab: simulated cPanel hosts behind real OpenSSH and real Exim, on loopback.

See ``docs/lab.md``. Importable by tests, the demo and the benchmarks::

    from lab import Lab, HostSpec
"""

from lab.fleet import Host, Lab, LabError, NetReservation, listeners, reserve_net
from lab.spec import HostSpec, Login

__all__ = ["Host", "HostSpec", "Lab", "LabError", "Login", "NetReservation", "listeners", "reserve_net"]
