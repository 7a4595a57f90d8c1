// Command pause is the e2e cluster's pod sandbox process: it holds the pod's
// namespaces open and does nothing until it is told to stop. Built static
// (CGO_ENABLED=0) so it runs in an image that holds nothing else.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	// As PID 1 of a pod sharing its PID namespace, the sandbox inherits the
	// orphans of the pod's containers: reap them so none stays a zombie.
	child := make(chan os.Signal, 1)
	signal.Notify(child, syscall.SIGCHLD)
	for {
		select {
		case <-stop:
			return
		case <-child:
			reap()
		}
	}
}

func reap() {
	for {
		var status syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}
