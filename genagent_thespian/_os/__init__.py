"""The operating system: finding and ending processes, and closing the TCP transport.

::

    processes.py       the one place that signals processes; markers, parent-death signal
    procfs.py          what only /proc says: process groups, start-time identity, boot id
    security.py        loopback listeners, the node secret, capability checks
    frames.py          bounded, authenticated frames for Thespian's TCP transport
    shutdown_guard.py  only the process that started a system may shut it down
    private.py         files holding secrets or prompts are owner-only, whatever the umask
    state.py           where this user's genagent state lives on disk

Why this folder exists: Thespian leaves processes behind (children of a killed actor,
orphans after a failed shutdown) and, as shipped, listens on every interface and trusts
every frame; these modules close both gaps, and nothing else in the package does either.
"""
