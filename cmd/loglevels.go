package main

// logLevels is the usage of --zap-log-level: what each level of the
// daemon's log shows. The levels follow cluster-api's logging guide: the
// lower ones say what happened, the higher ones how.
const logLevels = "the daemon's log level. error: what failed (a CNI or delegate API call, a teardown, a write), once, where it ends; " +
	"info (the default) adds what changed on the node (its conflist written, restored or removed, configs set aside, " +
	"sandboxes swept, pods found without their networks, hot-plugs refused) and what is being retried; " +
	"debug (1) adds every CNI and delegate API call served, with its duration, and what was dropped on purpose; " +
	"plexus logs nothing above 1, 5 adds controller-runtime's every reconcile. " +
	"Lines are JSON (see --zap-encoder); a line about a pod, a network, the node or a sandbox names it with the key pod, network (each {namespace, name}), node or containerID"
