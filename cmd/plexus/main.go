// Command plexus is the CNI binary the container runtime executes. It
// relays each call to the plexus daemon on the node and prints the answer;
// when the daemon cannot be reached, it still tears a sandbox down from its
// attachment record, so a pod can always be deleted.
//
// It imports the standard library and the CNI library only (and plexus's
// packages that do the same), to stay small and quick to exec.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/plexus-cni/plexus/plugin/delegate"
	"github.com/plexus-cni/plexus/plugin/record"
	"github.com/plexus-cni/plexus/plugin/shimapi"
)

// callTimeout bounds one call to the daemon; the daemon enforces its own,
// shorter, per-operation deadline.
const callTimeout = 5 * time.Minute

func main() {
	skel.PluginMainFuncs(skel.CNIFuncs{
		Add:    relay("ADD"),
		Del:    del,
		Check:  relay("CHECK"),
		GC:     relay("GC"),
		Status: relay("STATUS"),
	}, version.All, "plexus: multi-network CNI meta-plugin (relays to the plexus daemon)")
}

func nodeConf(args *skel.CmdArgs) shimapi.NodeConf {
	c := shimapi.NodeConf{}
	_ = json.Unmarshal(args.StdinData, &c) // skel has validated the JSON
	if c.SocketPath == "" {
		c.SocketPath = shimapi.DefaultSocket
	}
	if c.StateDir == "" {
		c.StateDir = shimapi.DefaultStateDir
	}
	return c
}

// errDaemonDown marks a failure to reach the daemon at all, as opposed to
// an error the daemon answered.
var errDaemonDown = errors.New("plexus daemon unreachable")

func relay(command string) func(*skel.CmdArgs) error {
	return func(args *skel.CmdArgs) error {
		out, err := call(command, args)
		if errors.Is(err, errDaemonDown) {
			return types.NewError(types.ErrTryAgainLater, err.Error(), "is the plexus DaemonSet running on this node?")
		}
		if err != nil {
			return err
		}
		_, err = os.Stdout.Write(out)
		return err
	}
}

// del relays DEL, and falls back to tearing down from the record on disk
// when the daemon is down: DEL needs nothing the daemon has. A sandbox with
// no record gets the default network's DEL, from the config the node
// conflist carries, as the daemon would give it.
func del(args *skel.CmdArgs) error {
	_, err := call("DEL", args)
	if !errors.Is(err, errDaemonDown) {
		return err
	}
	conf := nodeConf(args)
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	store, serr := record.NewStore(shimapi.RecordsDir(conf.StateDir))
	if serr != nil {
		return types.NewError(types.ErrIOFailure, serr.Error(), "")
	}
	path := filepath.SplitList(args.Path)
	cni := libcni.NewCNIConfigWithCacheDir(path, shimapi.CacheDir(conf.StateDir), nil)
	if derr := delegate.DelSandbox(ctx, cni, store, args.ContainerID, args.Netns, unrecorded(args, conf, path)); derr != nil {
		return delegate.CNIError(fmt.Errorf("%v; tearing down from the record: %w", err, derr))
	}
	return nil
}

// unrecorded runs the default network's DEL for a sandbox with no record,
// with the runtime's result cache (libcni's default), where the runtime's
// own ADD of that network left its result. A conflist from a plexus that
// did not carry the default network's config leaves nothing to run. A
// sandbox Multus attached gets the DEL of every network Multus's cache
// file names instead, as the daemon gives it; a file that does not parse
// is reported on stderr and leaves the default network's DEL.
func unrecorded(args *skel.CmdArgs, conf shimapi.NodeConf, path []string) func(context.Context) error {
	if len(conf.DefaultNetworkConfig) == 0 && conf.MultusCacheDir == "" {
		return nil
	}
	return func(ctx context.Context) error {
		if conf.MultusCacheDir != "" {
			m, err := delegate.ReadMultusCache(conf.MultusCacheDir, args.ContainerID, args.IfName, args.Args, conf.CNIVersion, conf.RuntimeConfig)
			if m != nil {
				return m.Del(ctx, libcni.NewCNIConfigWithCacheDir(path, conf.MultusCacheDir, nil), args.ContainerID, args.Netns)
			}
			if err != nil {
				fmt.Fprintf(os.Stderr, "plexus: %v; tearing down the default network only\n", err)
			}
		}
		if len(conf.DefaultNetworkConfig) == 0 {
			return nil
		}
		def, err := delegate.Unrecorded(conf.DefaultNetworkConfig, conf.RuntimeConfig, args.IfName, args.Args)
		if err != nil {
			return err
		}
		return delegate.Del(ctx, libcni.NewCNIConfig(path, nil), args.ContainerID, args.Netns, def)
	}
}

func call(command string, args *skel.CmdArgs) ([]byte, error) {
	conf := nodeConf(args)
	body, err := json.Marshal(&shimapi.Request{
		Command:     command,
		ContainerID: args.ContainerID,
		NetNS:       args.Netns,
		IfName:      args.IfName,
		Args:        args.Args,
		Path:        args.Path,
		Config:      args.StdinData,
	})
	if err != nil {
		return nil, err
	}
	status, out, err := post(conf.SocketPath, body)
	if err != nil {
		return nil, err
	}
	if status == 200 {
		return out, nil
	}
	cniErr := &types.Error{}
	if err := json.Unmarshal(out, cniErr); err != nil || cniErr.Msg == "" {
		return nil, types.NewError(types.ErrInternal, fmt.Sprintf("plexus daemon answered status %d: %s", status, out), "")
	}
	return nil, cniErr
}

// post sends one HTTP/1.0 request over the daemon's socket and reads the
// answer to the end. HTTP/1.0 keeps both sides simple (no chunking, the
// daemon closes when done), and writing it by hand keeps net/http, and
// half of the binary, out of a program exec'd for every CNI call.
func post(socket string, body []byte) (int, []byte, error) {
	conn, err := net.DialTimeout("unix", socket, 10*time.Second)
	if err != nil {
		return 0, nil, fmt.Errorf("%w at %s: %v", errDaemonDown, socket, err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(callTimeout)); err != nil {
		return 0, nil, err
	}
	head := fmt.Sprintf("POST %s HTTP/1.0\r\nHost: plexus\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n",
		shimapi.Path, len(body))
	if _, err := conn.Write(append([]byte(head), body...)); err != nil {
		return 0, nil, types.NewError(types.ErrTryAgainLater, fmt.Sprintf("calling the plexus daemon: %v", err), "")
	}
	answer, err := io.ReadAll(conn)
	if err != nil {
		return 0, nil, types.NewError(types.ErrIOFailure, fmt.Sprintf("reading the plexus daemon's answer: %v", err), "")
	}
	headers, out, found := bytes.Cut(answer, []byte("\r\n\r\n"))
	statusLine, _, _ := bytes.Cut(headers, []byte("\r\n"))
	fields := strings.Fields(string(statusLine))
	if !found || len(fields) < 2 || !strings.HasPrefix(fields[0], "HTTP/") {
		return 0, nil, types.NewError(types.ErrIOFailure, fmt.Sprintf("the plexus daemon's answer is not HTTP: %.200q", answer), "")
	}
	status, err := strconv.Atoi(fields[1])
	if err != nil {
		return 0, nil, types.NewError(types.ErrIOFailure, fmt.Sprintf("the plexus daemon's status line %q: %v", statusLine, err), "")
	}
	return status, out, nil
}
