package cluster

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// certValidity is long enough for any test run and short enough that a
// forgotten state dir is not a credential for ever.
const certValidity = 7 * 24 * time.Hour

// authority is the cluster's one CA: it signs every serving and client
// certificate, and the API server and kubelet trust it for client auth.
type authority struct {
	cert *x509.Certificate
	key  crypto.Signer
}

// certSpec is one leaf certificate.
type certSpec struct {
	file   string // pki/<file>.crt and .key
	cn     string
	orgs   []string
	server bool
	dns    []string
	ips    []net.IP
}

// writePKI creates the CA, every certificate the components use, the
// service account key pair and a kubeconfig per client.
func (c *Cluster) writePKI(nodeIP net.IP) error {
	dir := c.path("pki")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	ca, err := newAuthority()
	if err != nil {
		return err
	}
	if err := writePEM(filepath.Join(dir, "ca.crt"), "CERTIFICATE", ca.cert.Raw); err != nil {
		return err
	}
	if err := writeKey(filepath.Join(dir, "ca.key"), ca.key); err != nil {
		return err
	}
	local := []net.IP{net.IPv4(127, 0, 0, 1), nodeIP}
	specs := []certSpec{
		{file: "apiserver", cn: "kube-apiserver", server: true, ips: append(local, ServiceIP),
			dns: []string{"kubernetes", "kubernetes.default", "kubernetes.default.svc",
				"kubernetes.default.svc.cluster.local", "localhost", NodeName}},
		{file: "apiserver-kubelet-client", cn: "kube-apiserver-kubelet-client", orgs: []string{"system:masters"}},
		{file: "admin", cn: "kubernetes-admin", orgs: []string{"system:masters"}},
		{file: "controller-manager", cn: "system:kube-controller-manager"},
		{file: "scheduler", cn: "system:kube-scheduler"},
		{file: "kubelet-client", cn: "system:node:" + NodeName, orgs: []string{"system:nodes"}},
		{file: "kubelet-serving", cn: NodeName, server: true, ips: local, dns: []string{NodeName, "localhost"}},
	}
	for _, s := range specs {
		if err := ca.issue(dir, s); err != nil {
			return fmt.Errorf("certificate %s: %w", s.file, err)
		}
	}
	sa, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	if err := writeKey(filepath.Join(dir, "sa.key"), sa); err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(sa.Public())
	if err != nil {
		return err
	}
	if err := writePEM(filepath.Join(dir, "sa.pub"), "PUBLIC KEY", pub); err != nil {
		return err
	}
	for user, file := range map[string]string{"admin": "admin", "controller-manager": "controller-manager",
		"scheduler": "scheduler", "kubelet": "kubelet-client"} {
		if err := c.writeKubeconfig(user, file); err != nil {
			return err
		}
	}
	return nil
}

func newAuthority() (*authority, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "plexus-e2e-ca"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(certValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &authority{cert: cert, key: key}, nil
}

func (a *authority) issue(dir string, s certSpec) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: s.cn, Organization: s.orgs},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(certValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		DNSNames:     s.dns,
		IPAddresses:  s.ips,
	}
	if s.server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, key.Public(), a.key)
	if err != nil {
		return err
	}
	if err := writePEM(filepath.Join(dir, s.file+".crt"), "CERTIFICATE", der); err != nil {
		return err
	}
	return writeKey(filepath.Join(dir, s.file+".key"), key)
}

// writeKubeconfig writes kubeconfig/<user>.kubeconfig: the API server on
// loopback, the CA, and the client certificate pki/<certFile>.crt,
// embedded so the file can be copied elsewhere.
func (c *Cluster) writeKubeconfig(user, certFile string) error {
	ca, err := os.ReadFile(c.path("pki", "ca.crt"))
	if err != nil {
		return err
	}
	crt, err := os.ReadFile(c.path("pki", certFile+".crt"))
	if err != nil {
		return err
	}
	key, err := os.ReadFile(c.path("pki", certFile+".key"))
	if err != nil {
		return err
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[ClusterName] = &clientcmdapi.Cluster{Server: APIServerURL, CertificateAuthorityData: ca}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{ClientCertificateData: crt, ClientKeyData: key}
	cfg.Contexts[ClusterName] = &clientcmdapi.Context{Cluster: ClusterName, AuthInfo: user}
	cfg.CurrentContext = ClusterName
	if err := os.MkdirAll(c.path("kubeconfig"), 0o700); err != nil {
		return err
	}
	return clientcmd.WriteToFile(*cfg, c.kubeconfig(user))
}

func (c *Cluster) kubeconfig(user string) string { return c.path("kubeconfig", user+".kubeconfig") }

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return n
}

func writeKey(file string, key crypto.Signer) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	return writePEM(file, "PRIVATE KEY", der)
}

func writePEM(file, kind string, der []byte) error {
	return os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600)
}
