"""The anchor clients the fleet benchmark times against ``relayguard scan``; each is a whole process.

Every anchor reads the same arguments (a file of addresses, the lab's client key and known_hosts, the
probe script, the concurrency), runs the identical probe text on every host with host keys checked
against known_hosts, and prints one line per host: ``address<TAB>rc<TAB>complete`` (complete: the
output carried the probe's ``scan.end=1`` marker).
"""
