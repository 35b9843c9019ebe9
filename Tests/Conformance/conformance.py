#!/usr/bin/env python3
"""ComputeGrid protocol conformance suite: a peer written from PROTOCOL.md and grid.proto alone
(pyzmq and protobuf, from Debian or PyPI), run against real controllers.

    conformance.py --national tcp://HOST:PORT --region tcp://HOST:PORT --region-id R

It plays a client (submit, query, cancel), an agent (several nodes over one connection:
register, heartbeat, refuse an assignment and take the next, report it, repeat a report,
report for a stale epoch, address nodes by resource name) and a child region (full and delta
summaries up, a job forwarded down, its end reported up). Each
check names the PROTOCOL.md section whose rule it tests. Exit status 0 when every check
passes; each failure is printed with what was expected and what came.

A third party can run it against their own controllers: nothing here knows ComputeGrid's code.
The generated `computegrid/v1/grid_pb2.py` comes from grid.proto (scripts/generate-protos.sh).
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import zmq  # noqa: E402
from computegrid.v1 import grid_pb2 as pb  # noqa: E402

PAYLOAD = {
    pb.REGISTER: pb.Register, pb.HEARTBEAT: pb.Heartbeat, pb.ASSIGNMENT_ACK: pb.AssignmentAck,
    pb.STATUS_UPDATE: pb.StatusUpdate, pb.REGISTER_ACK: pb.RegisterAck, pb.HEARTBEAT_ACK: pb.HeartbeatAck,
    pb.ASSIGNMENT: pb.Assignment, pb.STATUS_ACK: pb.StatusAck, pb.CANCEL: pb.Cancel,
    pb.REGION_SUMMARY: pb.RegionSummary, pb.JOB_FORWARD_ACK: pb.JobForwardAck,
    pb.REGION_SUMMARY_ACK: pb.RegionSummaryAck, pb.JOB_FORWARD: pb.JobForward, pb.SUBMIT: pb.Submit,
    pb.SUBMIT_REPLY: pb.SubmitReply, pb.QUERY: pb.Query, pb.QUERY_REPLY: pb.QueryReply,
    pb.ERROR_REPLY: pb.ErrorReply,
}

failures = []
passed = []


def check(section, what, ok, detail=""):
    """Records one rule's outcome: the PROTOCOL.md section and what was checked."""
    line = f"[{section}] {what}"
    if ok:
        passed.append(line)
        print(f"ok    {line}")
    else:
        failures.append(f"{line}: {detail}")
        print(f"FAIL  {line}: {detail}")
    return ok


class Peer:
    """One DEALER connection; one sequence counter for everything this process sends."""
    sequence = 0

    def __init__(self, ctx, endpoint, sender):
        self.socket = ctx.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.connect(endpoint)
        self.sender = sender
        self.inbox = []  # envelopes read while waiting for something else
        # Called about every 0.5 s while this peer waits (an agent's heartbeats: a node that
        # falls silent past its lease is declared lost, as PROTOCOL.md says).
        self.tick = None
        self.last_tick = 0.0

    def send(self, mtype, message, version=1, raw_payload=None):
        Peer.sequence += 1
        env = pb.Envelope(version=version, type=mtype, sender=self.sender, sequence=Peer.sequence,
                          payload=raw_payload if raw_payload is not None else message.SerializeToString())
        self.socket.send(env.SerializeToString())
        return Peer.sequence

    def receive(self, timeout):
        if self.inbox:
            return self.inbox.pop(0)
        if self.socket.poll(int(timeout * 1000)) == 0:
            return None
        frames = self.socket.recv_multipart()
        env = pb.Envelope()
        env.ParseFromString(frames[-1])
        return env

    def wait(self, predicate, timeout=10):
        """The first envelope (by arrival) that `predicate` accepts; others are kept."""
        deadline = time.time() + timeout
        kept = []
        found = None
        while time.time() < deadline and found is None:
            if self.tick and time.time() - self.last_tick >= 0.5:
                self.last_tick = time.time()
                self.tick()
            env = self.receive(max(0.01, min(0.3, deadline - time.time())))
            if env is None:
                continue
            if predicate(env):
                found = env
            else:
                kept.append(env)
        self.inbox = kept + self.inbox
        return found

    def request(self, mtype, message, timeout=10, **kw):
        seq = self.send(mtype, message, **kw)
        return self.wait(lambda e: e.reply_to == seq, timeout)


def body(env):
    msg = PAYLOAD[env.type]()
    msg.ParseFromString(env.payload)
    return msg


def device(node, i):
    return pb.Device(id=f"GPU-conformance-{node}-{i}", index=i, vendor="nvidia", model="NVIDIA A10G",
                     memory_total_mib=23028, pci_bus_id=f"0000:{i + 1:02x}:00.0", numa_node=-1, temperature_c=-1000,
                     utilization_percent=-1, health_state="healthy", grade="C", compute_units=71)


def spec(name, command="/bin/true", region=None):
    s = pb.JobSpec(name=name, command=command, accelerators=pb.AcceleratorRequest(count=1, vendor="nvidia"))
    if region:
        s.allowed_regions.append(region)
    return s


def envelope_rules(national):
    # Envelope: versions other than 1 are refused with `unsupported`, naming the version spoken.
    reply = national.request(pb.QUERY, pb.Query(kind=pb.Query.REGIONS), version=2)
    check("Envelope", "a version other than 1 gets ERROR_REPLY unsupported naming version 1",
          reply is not None and reply.type == pb.ERROR_REPLY and body(reply).code == "unsupported" and "1" in body(reply).message,
          reply and body(reply))
    # Envelope: an unknown type is refused with bad_request.
    reply = national.request(999, pb.Query())
    check("Envelope", "an unknown message type gets ERROR_REPLY bad_request",
          reply is not None and reply.type == pb.ERROR_REPLY and body(reply).code == "bad_request", reply and body(reply))
    # Envelope: a payload that does not decode is refused with bad_request.
    reply = national.request(pb.SUBMIT, None, raw_payload=b"\xff\xff\xff\xff")
    check("Envelope", "a payload that does not decode gets ERROR_REPLY bad_request",
          reply is not None and reply.type == pb.ERROR_REPLY and body(reply).code == "bad_request", reply and body(reply))
    # Envelope: ids are 1-128 bytes of A-Z a-z 0-9 - _ . : ; the error names type and field.
    reply = national.request(pb.SUBMIT, pb.Submit(spec=spec("bad-id"), job_id="no spaces allowed"))
    check("Envelope", "an invalid id gets ERROR_REPLY bad_request naming Submit.job_id",
          reply is not None and reply.type == pb.ERROR_REPLY and body(reply).code == "bad_request"
          and "Submit.job_id" in body(reply).message, reply and body(reply))
    check("Envelope", "a reply's reply_to is the request's sequence", reply is not None and reply.reply_to == Peer.sequence,
          reply and (reply.reply_to, Peer.sequence))


def client_rules(national, tag):
    job = f"conf-{tag}-1"
    reply = national.request(pb.SUBMIT, pb.Submit(spec=spec("conformance"), job_id=job))
    ok = reply is not None and reply.type == pb.SUBMIT_REPLY and body(reply).job_id == job
    check("Messages", "SUBMIT gets SUBMIT_REPLY with the job id asked for", ok, reply and body(reply))
    again = national.request(pb.SUBMIT, pb.Submit(spec=spec("conformance"), job_id=job))
    check("Messages", "SUBMIT retried with the same job_id answers for the same job (no second job)",
          again is not None and again.type == pb.SUBMIT_REPLY and body(again).job_id == job and body(again).accepted,
          again and body(again))
    reply = national.request(pb.SUBMIT, pb.Submit(spec=pb.JobSpec(name="no-command", accelerators=pb.AcceleratorRequest(count=1))))
    check("Matching replies and acknowledgements", "SUBMIT without a command: SUBMIT_REPLY accepted=false naming command",
          reply is not None and reply.type == pb.SUBMIT_REPLY and not body(reply).accepted and "command" in body(reply).reason,
          reply and body(reply))
    reply = national.request(pb.QUERY, pb.Query(kind=pb.Query.JOB, job_id=job))
    check("Messages", "QUERY JOB answers QUERY_REPLY with the job",
          reply is not None and reply.type == pb.QUERY_REPLY and [j.job_id for j in body(reply).jobs] == [job], reply and body(reply))
    reply = national.request(pb.QUERY, pb.Query(kind=pb.Query.JOB, job_id="conf-never-submitted"))
    check("Envelope", "QUERY JOB of an unknown job gets ERROR_REPLY not_found",
          reply is not None and reply.type == pb.ERROR_REPLY and body(reply).code == "not_found", reply and body(reply))
    reply = national.request(pb.CANCEL, pb.Cancel(job_id="conf-never-submitted"))
    check("Cancel", "CANCEL of an unknown job gets ERROR_REPLY not_found",
          reply is not None and reply.type == pb.ERROR_REPLY and body(reply).code == "not_found", reply and body(reply))
    reply = national.request(pb.QUERY, pb.Query(kind=pb.Query.JOBS, limit=1))
    check("Messages", "QUERY JOBS pages: total and next_offset",
          reply is not None and reply.type == pb.QUERY_REPLY and body(reply).total >= 1 and len(body(reply).jobs) == 1
          and (body(reply).next_offset == 1 or body(reply).total == 1), reply and body(reply))
    return job


def agent_rules(ctx, region_endpoint, region_id, national, tag, lost_after_ms=0):
    agent = Peer(ctx, region_endpoint, f"conformance-agent-{tag}")
    nodes = [f"conf-{tag}-n{i}" for i in range(3)]
    # Sockets: one connection may carry many nodes; identity is in the payload.
    acks = {}
    for n in nodes:
        reply = agent.request(pb.REGISTER, pb.Register(node_id=n, hostname=n, devices=[device(n, 0)], sent_ms=1000))
        if reply is not None and reply.type == pb.REGISTER_ACK:
            acks[n] = body(reply)
    if not check("Sockets", "three nodes register over one connection, each gets its REGISTER_ACK", set(acks) == set(nodes), acks):
        return  # nothing below can hold without registered nodes
    alive = set(nodes)
    agent.tick = lambda: [agent.send(pb.HEARTBEAT, pb.Heartbeat(node_id=n, sent_ms=int(time.time() * 1000))) for n in sorted(alive)]
    ack = acks.get(nodes[0])
    check("Messages", "REGISTER_ACK carries region_id, heartbeat interval, lease and margin, and echoes sent_ms",
          ack is not None and ack.region_id == region_id and ack.heartbeat_interval_ms > 0 and ack.lease_ms > 0
          and ack.lease_margin_ms < ack.lease_ms and ack.echo_sent_ms == 1000, ack)
    for n in nodes:
        reply = agent.request(pb.HEARTBEAT, pb.Heartbeat(node_id=n, sent_ms=2000, assignment_digest=0, assignment_count=0))
        ok = reply is not None and reply.type == pb.HEARTBEAT_ACK and body(reply).known and body(reply).echo_sent_ms == 2000
        if n == nodes[0]:
            check("Messages", "HEARTBEAT of a registered node: HEARTBEAT_ACK known=true echoing sent_ms", ok, reply and body(reply))
    reply = agent.request(pb.HEARTBEAT, pb.Heartbeat(node_id=f"conf-{tag}-stranger", sent_ms=3000))
    check("Messages", "HEARTBEAT of a node never registered: known=false (register again)",
          reply is not None and reply.type == pb.HEARTBEAT_ACK and not body(reply).known, reply and body(reply))

    # Resource names: device ids are name segments, checked at the boundary; names address nodes.
    bad_device = device(f"conf-{tag}-badid", 0)
    bad_device.id = "GPU with spaces"
    reply = agent.request(pb.REGISTER, pb.Register(node_id=f"conf-{tag}-badid", hostname="x", devices=[bad_device], sent_ms=1000))
    check("Resource names", "a REGISTER whose device id is not an identifier gets ERROR_REPLY bad_request naming Register.devices[0].id",
          reply is not None and reply.type == pb.ERROR_REPLY and body(reply).code == "bad_request"
          and "Register.devices[0].id" in body(reply).message, reply and body(reply))
    twice = agent.request(pb.REGISTER, pb.Register(node_id=f"conf-{tag}-twice", hostname="x",
                                                   devices=[device(nodes[0], 0), device(nodes[0], 0)], sent_ms=1000))
    check("Resource names", "a REGISTER naming one device twice gets ERROR_REPLY bad_request naming Register.devices[1].id",
          twice is not None and twice.type == pb.ERROR_REPLY and "Register.devices[1].id" in body(twice).message, twice and body(twice))
    operator = Peer(ctx, region_endpoint, f"conformance-names-{tag}")
    name = f"cg://{region_id}/{nodes[0]}"
    for where, peer in (("the region", operator), ("the national scheduler (relayed)", national)):
        reply = peer.request(pb.QUERY, pb.Query(kind=pb.Query.NODES, resource=name))
        got = body(reply).nodes[0] if reply is not None and reply.type == pb.QUERY_REPLY and body(reply).nodes else None
        check("Resource names", f"QUERY NODES resource={name} at {where}: that node, its units named under it",
              got is not None and got.node_id == nodes[0] and got.resource == name
              and [u.resource for u in got.units] == [f"{name}/{device(nodes[0], 0).id}"], reply and body(reply))
    reply = operator.request(pb.QUERY, pb.Query(kind=pb.Query.NODES, resource=f"cg://{region_id}/bad node"))
    check("Resource names", "a QUERY whose resource does not parse gets ERROR_REPLY bad_request naming Query.resource and the segment",
          reply is not None and reply.type == pb.ERROR_REPLY and body(reply).code == "bad_request"
          and "Query.resource" in body(reply).message and "'bad node'" in body(reply).message, reply and body(reply))
    reply = operator.request(pb.QUERY, pb.Query(kind=pb.Query.NODES, resource=f"cg://{region_id}/{nodes[0]}/GPU-not-there"))
    check("Resource names", "a device name the node does not have gets ERROR_REPLY not_found",
          reply is not None and reply.type == pb.ERROR_REPLY and body(reply).code == "not_found", reply and body(reply))

    # A job for this region lands on one of our nodes.
    job = f"conf-{tag}-run"
    sub = national.request(pb.SUBMIT, pb.Submit(spec=spec("conformance-run", region=region_id), job_id=job))
    check("Messages", "SUBMIT for this region is accepted", sub is not None and sub.type == pb.SUBMIT_REPLY and body(sub).accepted,
          sub and body(sub))
    deadline = time.time() + 30
    assignment = None
    while time.time() < deadline and assignment is None:
        env = agent.wait(lambda e: e.type == pb.ASSIGNMENT, 1)
        if env is not None:
            assignment = body(env)
    check("Messages", "an ASSIGNMENT arrives for one of the nodes, with epoch and device ids",
          assignment is not None and assignment.node_id in nodes and assignment.epoch >= 1 and len(assignment.device_ids) == 1,
          assignment)
    if assignment is None:
        return
    # Retry policy: a refused assignment is placed again (at once the first time) under a new
    # epoch, and a report for the refused one is stale.
    agent.send(pb.ASSIGNMENT_ACK, pb.AssignmentAck(assignment_id=assignment.assignment_id, epoch=assignment.epoch,
                                                   node_id=assignment.node_id, accepted=False, reason="conformance refuses once"))
    refused = assignment
    again = agent.wait(lambda e: e.type == pb.ASSIGNMENT and body(e).job_id == refused.job_id and body(e).epoch > refused.epoch, 15)
    assignment = body(again) if again is not None else None
    check("Retry policy", "a refused ASSIGNMENT is offered again under a newer epoch, id <job>.<epoch>",
          assignment is not None and assignment.assignment_id == f"{assignment.job_id}.{assignment.epoch}" and assignment.node_id in nodes,
          assignment)
    if assignment is None:
        return
    stale = agent.request(pb.STATUS_UPDATE, pb.StatusUpdate(job_id=refused.job_id, assignment_id=refused.assignment_id, epoch=refused.epoch,
                                                            node_id=refused.node_id, state="running",
                                                            update_id=f"{refused.assignment_id}:running"))
    check("Delivery rules", "a report for the refused assignment is acknowledged applied=false (stale)",
          stale is not None and stale.type == pb.STATUS_ACK and not body(stale).applied, stale and body(stale))
    reply = agent.request(pb.ASSIGNMENT_ACK, pb.AssignmentAck(assignment_id=assignment.assignment_id, epoch=assignment.epoch,
                                                            node_id=assignment.node_id, accepted=True))
    # ASSIGNMENT_ACK gets no reply; the next status update is what the region acknowledges.
    check("Messages", "ASSIGNMENT_ACK needs no answer", reply is None or reply.type != pb.ERROR_REPLY, reply and body(reply))

    def status(state, update, epoch=None, exit_code=None, node_id=None):
        u = pb.StatusUpdate(job_id=assignment.job_id, assignment_id=assignment.assignment_id,
                            epoch=assignment.epoch if epoch is None else epoch,
                            node_id=assignment.node_id if node_id is None else node_id, state=state,
                            update_id=update, message="conformance")
        if exit_code is not None:
            u.exit_code = exit_code
            u.has_exit_code = True
            u.end_reason = pb.EXITED
        return agent.request(pb.STATUS_UPDATE, u)

    # node_id is for logs: the region matches a report by assignment_id and epoch.
    reply = status("running", f"{assignment.assignment_id}:running", node_id="")
    check("Delivery rules", "STATUS_UPDATE running (without node_id) gets STATUS_ACK applied with its update_id",
          reply is not None and reply.type == pb.STATUS_ACK and body(reply).applied
          and body(reply).update_id == f"{assignment.assignment_id}:running", reply and body(reply))
    done = f"{assignment.assignment_id}:succeeded"
    reply = status("succeeded", done, exit_code=0)
    check("Delivery rules", "STATUS_UPDATE succeeded gets STATUS_ACK applied",
          reply is not None and reply.type == pb.STATUS_ACK and body(reply).applied, reply and body(reply))
    reply = status("succeeded", done, exit_code=0)
    check("Delivery rules", "the same update_id again is acknowledged again (idempotent), not applied twice",
          reply is not None and reply.type == pb.STATUS_ACK and body(reply).update_id == done, reply and body(reply))
    reply = status("running", f"{assignment.assignment_id}:late")
    check("Matching replies and acknowledgements", "an update after the job ended is acknowledged applied=true, reason 'ignored:'",
          reply is not None and reply.type == pb.STATUS_ACK and body(reply).applied and body(reply).reason.startswith("ignored:"),
          reply and body(reply))
    bad = agent.request(pb.STATUS_UPDATE, pb.StatusUpdate(job_id=assignment.job_id, assignment_id=assignment.assignment_id,
                                                           epoch=assignment.epoch, node_id=assignment.node_id, state="running"))
    check("Envelope", "a status update without update_id gets ERROR_REPLY bad_request naming StatusUpdate.update_id",
          bad is not None and bad.type == pb.ERROR_REPLY and body(bad).code == "bad_request" and "StatusUpdate.update_id" in body(bad).message,
          bad and body(bad))
    bad = agent.request(pb.STATUS_UPDATE, pb.StatusUpdate(job_id=assignment.job_id, assignment_id=assignment.assignment_id,
                                                           epoch=assignment.epoch, node_id=assignment.node_id, state="exploded",
                                                           update_id=f"{assignment.assignment_id}:bad"))
    check("Envelope", "a status update with an unknown state gets ERROR_REPLY bad_request naming StatusUpdate.state",
          bad is not None and bad.type == pb.ERROR_REPLY and body(bad).code == "bad_request" and "StatusUpdate.state" in body(bad).message,
          bad and body(bad))
    reply = status("running", f"{assignment.assignment_id}:stale", epoch=assignment.epoch + 1000)
    check("Leases and self-fencing", "a status update for an epoch the region did not assign is not applied",
          reply is not None and reply.type == pb.STATUS_ACK and not body(reply).applied, reply and body(reply))
    deadline = time.time() + 20
    state = ""
    while time.time() < deadline and state != "succeeded":
        # The job this node ran (the client rules' job may have come first).
        reply = national.request(pb.QUERY, pb.Query(kind=pb.Query.JOB, job_id=assignment.job_id))
        state = body(reply).jobs[0].state if reply is not None and reply.type == pb.QUERY_REPLY and body(reply).jobs else ""
        time.sleep(0.2)
    check("Messages", "the job's end reaches the national scheduler (status flows up)", state == "succeeded", state)
    if lost_after_ms:
        # A node the region declared lost is still known: its next heartbeat brings it back.
        quiet = nodes[2]
        alive.discard(quiet)
        agent.wait(lambda e: False, lost_after_ms / 1000 * 1.5 + 1)  # the others keep beating
        operator = Peer(ctx, region_endpoint, f"conformance-operator-{tag}")

        def node_state():
            r = operator.request(pb.QUERY, pb.Query(kind=pb.Query.NODES, node_id=quiet))
            return body(r).nodes[0].state if r is not None and r.type == pb.QUERY_REPLY and body(r).nodes else None
        before = node_state()
        reply = agent.request(pb.HEARTBEAT, pb.Heartbeat(node_id=quiet, sent_ms=4000))
        alive.add(quiet)
        check("Matching replies and acknowledgements", "a node silent past node_lost_after is lost but still known: known=true",
              before == "lost" and reply is not None and reply.type == pb.HEARTBEAT_ACK and body(reply).known,
              f"state before: {before}; ack: {reply and body(reply)}")
        agent.wait(lambda e: False, 0.6)
        check("Matching replies and acknowledgements", "its heartbeat brings the lost node back to ready", node_state() == "ready", node_state())


def region_rules(ctx, national_endpoint, tag):
    region_id = f"conf-{tag}-region"
    region = Peer(ctx, national_endpoint, region_id)
    summary = pb.RegionSummary(region_id=region_id, nodes_ready=1, nodes_total=1, full=True, sequence=1,
                               generated_unix_ms=int(time.time() * 1000), confirms_starts=False,
                               capacity=[pb.Capacity(vendor="nvidia", model="NVIDIA A10G", memory_total_mib=23028, total=1, free=1,
                                                     healthy=1, grade="C")])
    reply = region.request(pb.REGION_SUMMARY, summary)
    check("Region summaries are aggregates", "a full REGION_SUMMARY gets REGION_SUMMARY_ACK",
          reply is not None and reply.type == pb.REGION_SUMMARY_ACK and body(reply).region_id == region_id, reply and body(reply))
    client = Peer(ctx, national_endpoint, f"conformance-client-{tag}")

    def capacity_total():
        r = client.request(pb.QUERY, pb.Query(kind=pb.Query.REGIONS, resource=f"cg://{region_id}"))
        regions = body(r).regions if r is not None and r.type == pb.QUERY_REPLY else []
        return sum(c.total for c in regions[0].capacity) if len(regions) == 1 and regions[0].region_id == region_id else None
    # A delta on the summary the receiver holds changes only the classes it carries.
    delta = pb.RegionSummary(region_id=region_id, nodes_ready=1, nodes_total=1, full=False, sequence=2, base_sequence=1,
                             generated_unix_ms=int(time.time() * 1000), confirms_starts=False,
                             capacity=[pb.Capacity(vendor="nvidia", model="NVIDIA A10G", memory_total_mib=23028, total=2, free=2,
                                                   healthy=2, grade="C")])
    reply = region.request(pb.REGION_SUMMARY, delta)
    check("Region summaries are aggregates", "a delta on the held base is acknowledged without want_full and applied",
          reply is not None and reply.type == pb.REGION_SUMMARY_ACK and not body(reply).want_full and capacity_total() == 2,
          (reply and body(reply), capacity_total()))
    missed = pb.RegionSummary()
    missed.CopyFrom(delta)
    missed.sequence, missed.base_sequence = 9, 8
    missed.capacity[0].total = 7
    reply = region.request(pb.REGION_SUMMARY, missed)
    check("Region summaries are aggregates", "a delta on a base the receiver does not hold gets want_full, and the last counts stay",
          reply is not None and reply.type == pb.REGION_SUMMARY_ACK and body(reply).want_full and capacity_total() == 2,
          (reply and body(reply), capacity_total()))
    summary.sequence = 10
    summary.generated_unix_ms = int(time.time() * 1000)
    reply = region.request(pb.REGION_SUMMARY, summary)
    check("Region summaries are aggregates", "the full summary asked for replaces the class list",
          reply is not None and reply.type == pb.REGION_SUMMARY_ACK and not body(reply).want_full and capacity_total() == 1,
          (reply and body(reply), capacity_total()))
    job = f"conf-{tag}-forwarded"
    sub = client.request(pb.SUBMIT, pb.Submit(spec=spec("conformance-forward", region=region_id), job_id=job))
    check("National routing fields and decisions", "a job allowed only in the child region is accepted for it",
          sub is not None and sub.type == pb.SUBMIT_REPLY and body(sub).accepted, sub and body(sub))
    forward = region.wait(lambda e: e.type == pb.JOB_FORWARD, 15)
    check("Messages", "JOB_FORWARD comes down with the job id and spec",
          forward is not None and body(forward).job_id == job and body(forward).spec.command == "/bin/true", forward and body(forward))
    if forward is None:
        return
    region.send(pb.JOB_FORWARD_ACK, pb.JobForwardAck(job_id=job, accepted=True))
    update = pb.StatusUpdate(job_id=job, state="succeeded", region_id=region_id, update_id=f"{region_id}:{job}:done",
                             exit_code=0, has_exit_code=True, message="ran in the conformance region")
    reply = region.request(pb.STATUS_UPDATE, update)
    check("Delivery rules", "the region's STATUS_UPDATE up gets STATUS_ACK applied",
          reply is not None and reply.type == pb.STATUS_ACK and body(reply).applied, reply and body(reply))
    reply = client.request(pb.QUERY, pb.Query(kind=pb.Query.JOB, job_id=job))
    got = body(reply).jobs[0] if reply is not None and reply.type == pb.QUERY_REPLY and body(reply).jobs else None
    check("Messages", "the national scheduler records the child region's report",
          got is not None and got.state == "succeeded" and got.region_id == region_id, got)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--national", required=True)
    p.add_argument("--region", required=True)
    p.add_argument("--region-id", required=True)
    p.add_argument("--tag", default=str(os.getpid()))
    p.add_argument("--node-lost-after-ms", type=int, default=0,
                   help="the region's node_lost_after_ms: with it, also check that a lost node is still known (waits 1.5x that)")
    a = p.parse_args()
    ctx = zmq.Context()
    national = Peer(ctx, a.national, "conformance-client")
    envelope_rules(national)
    client_rules(national, a.tag)
    agent_rules(ctx, a.region, a.region_id, national, a.tag, a.node_lost_after_ms)
    region_rules(ctx, a.national, a.tag)
    print(f"\n{len(passed)} checks passed, {len(failures)} failed")
    for f in failures:
        print(f"  FAILED {f}")
    ctx.destroy(linger=0)
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
