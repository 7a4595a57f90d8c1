package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/plexus-cni/plexus/hack/image"
)

// whereabouts, the cluster-wide IPAM plugin, set up on the node the way
// its own installer (its DaemonSet's install-cni.sh) sets it up: the
// plugin in CNIBinDir, its CRDs in the cluster, and in WhereaboutsConfDir
// a kubeconfig of its ServiceAccount and the flat-file config that names
// it, so a network's ipam needs no more than its type and range.
const (
	// WhereaboutsNamespace holds whereabouts' ServiceAccount, its IPPools,
	// OverlappingRangeIPReservations and its lock (a Lease): the
	// kubeconfig's namespace, as its DaemonSet's namespace would be.
	WhereaboutsNamespace = "kube-system"
	WhereaboutsConfDir   = "/etc/cni/net.d/whereabouts.d"
	// WhereaboutsKubeconfig and WhereaboutsConf are the node files
	// whereabouts' documentation describes.
	WhereaboutsKubeconfig = WhereaboutsConfDir + "/whereabouts.kubeconfig"
	WhereaboutsConf       = WhereaboutsConfDir + "/whereabouts.conf"
	whereaboutsUser       = "whereabouts"
)

// whereaboutsRBAC is what the IPAM plugin itself calls (not its
// reconciler or node-slice controller, which this cluster does not run):
// its pools and reservations, and the Lease it serializes allocations
// with. A ServiceAccount of its own, as its installer makes, rather than
// the admin's certificate: a plugin on every node holds these
// credentials, so they grant this and nothing else, and a missing rule
// fails here as it would on a real cluster.
var whereaboutsRBAC = fmt.Sprintf(`apiVersion: v1
kind: ServiceAccount
metadata: {name: %[1]s, namespace: %[2]s}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: %[1]s-cni}
rules:
- apiGroups: [whereabouts.cni.cncf.io]
  resources: [ippools, overlappingrangeipreservations, nodeslicepools]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [get, create, update]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: %[1]s-cni}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: %[1]s-cni}
subjects:
- {kind: ServiceAccount, name: %[1]s, namespace: %[2]s}
`, whereaboutsUser, WhereaboutsNamespace)

func (c *Cluster) whereaboutsPlugin() string {
	return filepath.Join(c.WhereaboutsDir, "bin", "whereabouts")
}

// installWhereabouts installs whereabouts on the running control plane
// and the node.
func (c *Cluster) installWhereabouts(ctx context.Context) error {
	data, err := os.ReadFile(c.whereaboutsPlugin())
	if err != nil {
		return err
	}
	if err := c.installPlugin("whereabouts", data); err != nil {
		return err
	}
	if _, err := c.kubectl(ctx, "apply", "--server-side", "-f", filepath.Join(c.WhereaboutsDir, "crds")); err != nil {
		return err
	}
	// Right after the API server is ready, its kube-system namespace may
	// not be there yet.
	var token string
	if err := waitFor(ctx, "whereabouts' ServiceAccount and its token", 30*time.Second, func(ctx context.Context) error {
		if _, err := c.Kubectl(ctx, whereaboutsRBAC, "apply", "-f", "-"); err != nil {
			return err
		}
		token, err = c.whereaboutsToken(ctx)
		return err
	}); err != nil {
		return err
	}
	if err := c.appendLines("installed", WhereaboutsConfDir); err != nil {
		return err
	}
	if err := os.MkdirAll(WhereaboutsConfDir, 0o700); err != nil {
		return err
	}
	if err := c.writeWhereaboutsKubeconfig(token); err != nil {
		return err
	}
	conf, err := json.MarshalIndent(map[string]any{
		"datastore":  "kubernetes",
		"kubernetes": map[string]string{"kubeconfig": WhereaboutsKubeconfig},
	}, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(WhereaboutsConf, append(conf, '\n'), 0o600); err != nil {
		return err
	}
	c.progress("whereabouts %s: plugin in %s, CRDs applied, %s and %s for ServiceAccount %s/%s",
		filepath.Base(c.WhereaboutsDir), CNIBinDir, WhereaboutsConf, filepath.Base(WhereaboutsKubeconfig), WhereaboutsNamespace, whereaboutsUser)
	return nil
}

// whereaboutsToken is a token of whereabouts' ServiceAccount, valid as
// long as the cluster's certificates. Its installer copies the token of
// its DaemonSet's pod and rewrites the file when it rotates; this cluster
// runs no such pod and lives shorter than the token.
func (c *Cluster) whereaboutsToken(ctx context.Context) (string, error) {
	cs, err := c.clientset()
	if err != nil {
		return "", err
	}
	seconds := int64(certValidity / time.Second)
	tr, err := cs.CoreV1().ServiceAccounts(WhereaboutsNamespace).CreateToken(ctx, whereaboutsUser,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &seconds}}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("a token for ServiceAccount %s/%s: %w", WhereaboutsNamespace, whereaboutsUser, err)
	}
	return tr.Status.Token, nil
}

// writeWhereaboutsKubeconfig writes the plugin's kubeconfig: the API
// server where this node reaches it (loopback: there is no kube-proxy, so
// the kubernetes Service's address leads nowhere; plugins run in the
// node's network namespace), the cluster's CA and the token.
func (c *Cluster) writeWhereaboutsKubeconfig(token string) error {
	ca, err := os.ReadFile(c.path("pki", "ca.crt"))
	if err != nil {
		return err
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[ClusterName] = &clientcmdapi.Cluster{Server: APIServerURL, CertificateAuthorityData: ca}
	cfg.AuthInfos[whereaboutsUser] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts[whereaboutsUser] = &clientcmdapi.Context{Cluster: ClusterName, AuthInfo: whereaboutsUser, Namespace: WhereaboutsNamespace}
	cfg.CurrentContext = whereaboutsUser
	if err := clientcmd.WriteToFile(*cfg, WhereaboutsKubeconfig); err != nil {
		return err
	}
	return os.Chmod(WhereaboutsKubeconfig, 0o600)
}

// checkWhereabouts fails unless the build of hack/build-whereabouts.sh is
// in WhereaboutsDir: the plugin, static, and its CRDs.
func (c *Cluster) checkWhereabouts() error {
	if err := image.CheckStatic(c.whereaboutsPlugin()); err != nil {
		return fmt.Errorf("whereabouts (make whereabouts builds it): %w", err)
	}
	crds, err := filepath.Glob(filepath.Join(c.WhereaboutsDir, "crds", "*.yaml"))
	if err != nil || len(crds) == 0 {
		return fmt.Errorf("no whereabouts CRDs in %s (make whereabouts copies them)", filepath.Join(c.WhereaboutsDir, "crds"))
	}
	return nil
}
