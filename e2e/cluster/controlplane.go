package cluster

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// Ports of the cluster's own etcd, off etcd's defaults so that an etcd of
// the host (Debian's etcd-server package may start one) is left alone.
const (
	etcdClientURL = "http://127.0.0.1:12379"
	etcdPeerURL   = "http://127.0.0.1:12380"
)

// startControlPlane starts etcd, kube-apiserver, kube-controller-manager and
// kube-scheduler, and waits for each to report healthy.
func (c *Cluster) startControlPlane(ctx context.Context, nodeIP net.IP) error {
	if err := c.launch("etcd", c.bin("etcd"),
		"--name=default", "--data-dir="+c.path("etcd"),
		"--listen-client-urls="+etcdClientURL, "--advertise-client-urls="+etcdClientURL,
		"--listen-peer-urls="+etcdPeerURL, "--initial-advertise-peer-urls="+etcdPeerURL,
		"--initial-cluster=default="+etcdPeerURL, "--listen-metrics-urls=http://127.0.0.1:12381",
	); err != nil {
		return err
	}
	if err := waitFor(ctx, "etcd", time.Minute, func(ctx context.Context) error {
		if err := c.alive("etcd"); err != nil {
			return err
		}
		return httpOK(ctx, etcdClientURL+"/health", false)
	}); err != nil {
		return err
	}
	c.progress("etcd ready (%s)", etcdClientURL)

	pki := func(f string) string { return c.path("pki", f) }
	if err := c.launch("kube-apiserver", c.bin("kube-apiserver"),
		"--etcd-servers="+etcdClientURL,
		// Every address, not loopback alone: the admission webhook's pods
		// are on the pod network, whose only route off the pod leads to
		// the node's address (its certificate names that address).
		"--bind-address=0.0.0.0", "--advertise-address="+nodeIP.String(),
		// There is no kube-proxy, so a Service's ClusterIP leads nowhere:
		// the API server calls a webhook's Service at one of its
		// endpoints' addresses instead (the pod IPs, routed on the node),
		// as it calls aggregated API servers.
		"--enable-aggregator-routing=true",
		"--secure-port="+strconv.Itoa(APIServerPort),
		"--service-cluster-ip-range="+ServiceCIDR,
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction",
		"--allow-privileged=true",
		"--client-ca-file="+pki("ca.crt"),
		"--tls-cert-file="+pki("apiserver.crt"), "--tls-private-key-file="+pki("apiserver.key"),
		"--kubelet-client-certificate="+pki("apiserver-kubelet-client.crt"),
		"--kubelet-client-key="+pki("apiserver-kubelet-client.key"),
		"--kubelet-certificate-authority="+pki("ca.crt"),
		"--kubelet-preferred-address-types=InternalIP",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+pki("sa.pub"),
		"--service-account-signing-key-file="+pki("sa.key"),
		"--profiling=false",
	); err != nil {
		return err
	}
	cs, err := c.clientset()
	if err != nil {
		return err
	}
	if err := waitFor(ctx, "kube-apiserver", 2*time.Minute, func(ctx context.Context) error {
		if err := c.alive("kube-apiserver"); err != nil {
			return err
		}
		_, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err
	}); err != nil {
		return err
	}
	c.progress("kube-apiserver ready (%s)", APIServerURL)

	if err := c.launch("kube-controller-manager", c.bin("kube-controller-manager"),
		"--kubeconfig="+c.kubeconfig("controller-manager"),
		"--authentication-kubeconfig="+c.kubeconfig("controller-manager"),
		"--authorization-kubeconfig="+c.kubeconfig("controller-manager"),
		"--bind-address=127.0.0.1", "--leader-elect=false",
		"--use-service-account-credentials=true",
		"--service-account-private-key-file="+pki("sa.key"),
		"--root-ca-file="+pki("ca.crt"),
		"--cluster-signing-cert-file="+pki("ca.crt"), "--cluster-signing-key-file="+pki("ca.key"),
		"--profiling=false",
	); err != nil {
		return err
	}
	if err := c.launch("kube-scheduler", c.bin("kube-scheduler"),
		"--kubeconfig="+c.kubeconfig("scheduler"),
		"--authentication-kubeconfig="+c.kubeconfig("scheduler"),
		"--authorization-kubeconfig="+c.kubeconfig("scheduler"),
		"--bind-address=127.0.0.1", "--leader-elect=false", "--profiling=false",
	); err != nil {
		return err
	}
	for name, url := range map[string]string{
		"kube-controller-manager": "https://127.0.0.1:10257/healthz",
		"kube-scheduler":          "https://127.0.0.1:10259/healthz",
	} {
		if err := waitFor(ctx, name, time.Minute, func(ctx context.Context) error {
			if err := c.alive(name); err != nil {
				return err
			}
			return httpOK(ctx, url, true)
		}); err != nil {
			return err
		}
		c.progress("%s ready", name)
	}
	return nil
}

// clientset is an admin client of the cluster.
func (c *Cluster) clientset() (*kubernetes.Clientset, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", c.AdminKubeconfig())
	if err != nil {
		return nil, err
	}
	cfg.Timeout = 10 * time.Second
	return kubernetes.NewForConfig(cfg)
}

// httpOK GETs url and fails unless it answers 200. The components' own
// serving certificates are self-signed, hence insecure for their health.
func httpOK(ctx context.Context, url string, insecure bool) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: insecure}} //nolint:gosec // loopback health check only
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s: %s", url, resp.Status, body)
	}
	return nil
}
