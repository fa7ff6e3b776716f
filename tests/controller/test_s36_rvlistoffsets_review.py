"""Review of s36-listoffsets (the failover's given-up mark, docs/DESIGN.md §9.2): controller findings."""

from __future__ import annotations

from sqlalchemy import text

from controller.test_failover import _c1_in_view, finished, kill, setup, until  # noqa: F401  (setup: the fixture)


def test_a_failover_of_a_reachable_draining_cluster_does_not_give_it_up(setup):  # noqa: F811
    """c1 answers and is being decommissioned: its writes moved off cleanly, the drain waits for retention. A failover
    of c1 (a playbook run again, an operator's mistake) used to change nothing (§9.1: "nothing to do"); a reachable
    c1 holding active segments is refused ("decommission it"). Now the run marks the live c1 given up, so during its
    next blip a timestamp question leaves out its cleanly moved segments: the answer the branch fixes for the
    decommission's read_only step (a later segment's record, past c1's records at or after the timestamp)."""
    api, kafka = setup
    ctl = api.controller
    for p, chain in enumerate(ctl.view.topics["t"].partitions):
        if chain.active.cluster == "c1":
            kafka.ends[("c1", "t", p)] = 10  # records the drain by retention waits for
    run = api.post("/v1/workflows", json={"kind": "decommission", "cluster": "c1"}).json()
    until(lambda: api.get(f"/v1/workflows/{run['id']}").json()["step"] == "drain")
    assert api.get("/v1/clusters/c1").json()["reachable"] is True
    assert _c1_in_view(api)["state"] == "draining" and _c1_in_view(api)["given_up"] is False
    resp = api.post("/v1/workflows", json={"kind": "failover", "cluster": "c1"})
    if resp.status_code < 300:
        finished(api, resp.json())
    assert _c1_in_view(api)["given_up"] is False, resp.text


def test_a_failover_finished_by_an_older_controller_after_the_migration_is_read_as_given_up(setup, make_api):  # noqa: F811
    """upgrade.yml restarts the controllers one at a time: the first one restarted migrates the database to 0020
    (guessing the mark once), while the older active one still runs workflows, e.g. an auto-failover of a dead c1.
    That run leaves c1 read_only without the mark (the column's default: it knows no column), its last run a
    failover. Once a controller of this release is active, its views say c1 was not given up, which the upgrade's
    own guess says of a failover's read_only only (§9.2 "Versions"): a timestamp question then waits for c1's
    cleanly moved segments for as long as c1 is dead instead of leaving them out. The run's state here is what an
    older controller's failover leaves: c1 read_only, its mark as it was while c1 was active (the older controller
    knows no column; the fix: NULL, read as before the mark). Its moves do not bear on the mark and are left out."""
    api, kafka = setup
    kill(api, kafka, "c1")
    with api.controller.session() as s:  # the older controller's read_only step: the state alone
        s.execute(text("UPDATE clusters SET state = 'read_only' WHERE id = 'c1'"))
        s.commit()
    fresh = make_api(kafka=kafka)  # a controller of this release takes over: nothing in memory
    assert _c1_in_view(fresh)["state"] == "read_only"
    assert _c1_in_view(fresh)["given_up"] is True
