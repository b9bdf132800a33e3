// Package appliance is the running load balancer: its model of VIPs and
// backends, the TOML configuration, the immutable snapshots the datapath
// reads, the per-packet Forwarder, one worker per NIC queue, and the control
// plane around them (publishing, next-hop resolution, health checks).
//
// # Objects and their lifetimes
//
//   - Model (model.go) is plain data: VIPs, their backends, modes and
//     policies. Config (config*.go) is loaded from a file and turned into a
//     Model and start-up Options.
//   - Snapshot (snapshot.go) is built from a Model by BuildSnapshot and never
//     changes afterwards. Workers load the current one through an atomic
//     pointer once per batch.
//   - Registry (registry.go) lives as long as the Appliance and hands out
//     stable real IDs for (VIP, backend) pairs, so flow tables stay valid
//     across snapshots.
//   - Forwarder (forwarder.go) belongs to one worker goroutine: its flow
//     table and counters are never shared, and it takes no lock, makes no
//     system call and allocates nothing per packet.
//   - Worker (worker.go) is one queue's forwarding loop: NewWorker binds a
//     Forwarder to a socket and the published snapshot; Run, on a goroutine
//     locked to its CPU, receives, forwards and transmits batches until its
//     context ends, then hands every frame it held back to the UMEM. Its
//     counters are published for other goroutines at most StatsMaxAge late.
//     The Appliance makes one per queue; package perf drives one directly.
//   - Appliance (appliance.go) ties it together for one interface: Start
//     loads the firmware, opens a UMEM, socket and worker per queue and
//     attaches the redirect program; Publish swaps in a new model without
//     breaking established flows; Stop undoes everything and checks that
//     every UMEM frame is accounted for. Its methods are safe for concurrent
//     use.
//
// The effective model the datapath runs is the desired model (from Start or
// Publish) plus health-check overrides (health.go: a backend that is down is
// treated as failed) plus resolved MACs (nexthop.go: a backend whose next
// hop has no MAC gets no traffic). A new snapshot is published only when one
// of them changes.
//
// Privileged integration tests (datapath_*_test.go, encap_lab_test.go,
// health and drain tests) run the real appliance in network namespaces built
// by package lab.
package appliance
