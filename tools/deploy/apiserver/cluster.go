package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"runtime/debug"
	"sort"
	"time"

	"github.com/spf13/pflag"
	"go.etcd.io/etcd/server/v3/embed"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/cert"
	"k8s.io/client-go/util/keyutil"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
	"k8s.io/kubernetes/cmd/kube-apiserver/app/options"
)

// cluster is an embedded etcd and a kube-apiserver in this process, both on 127.0.0.1.
type cluster struct {
	etcd    *embed.Etcd
	etcdURL string
	config  *rest.Config // the admin client: bearer token of a system:masters user, the serving cert pinned
	version string
	done    chan error // the API server's Run result, closed when it returned
}

// freePort asks the kernel for a free loopback port. etcd binds its own listeners from URLs, so
// there is a short window in which another process could take the port; the API server is given
// its listener directly.
func freePort() (int, error) {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer listener.Close()
	return listener.Addr().(*net.TCPAddr).Port, nil
}

func startEtcd(dir string) (*embed.Etcd, string, error) {
	clientPort, err := freePort()
	if err != nil {
		return nil, "", err
	}
	peerPort, err := freePort()
	if err != nil {
		return nil, "", err
	}
	clientURL := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", clientPort)}
	peerURL := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", peerPort)}
	cfg := embed.NewConfig()
	cfg.Name = "dry-run"
	cfg.Dir = dir
	cfg.ListenClientUrls = []url.URL{clientURL}
	cfg.AdvertiseClientUrls = []url.URL{clientURL}
	cfg.ListenPeerUrls = []url.URL{peerURL}
	cfg.AdvertisePeerUrls = []url.URL{peerURL}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.LogLevel = "warn"
	cfg.UnsafeNoFsync = true // a throw-away store in a temporary directory
	cfg.ListenMetricsUrls = nil
	etcd, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, "", fmt.Errorf("etcd: %w", err)
	}
	select {
	case <-etcd.Server.ReadyNotify():
	case err := <-etcd.Err():
		etcd.Close()
		return nil, "", fmt.Errorf("etcd: %w", err)
	case <-time.After(time.Minute):
		etcd.Close()
		return nil, "", fmt.Errorf("etcd: not ready after a minute")
	}
	return etcd, clientURL.String(), nil
}

func startCluster(ctx context.Context, tmp string) (*cluster, error) {
	etcd, etcdURL, err := startEtcd(filepath.Join(tmp, "etcd"))
	if err != nil {
		return nil, err
	}
	c := &cluster{etcd: etcd, etcdURL: etcdURL, version: kubernetesVersion()}

	// Serving certificate (a self-signed CA and a leaf for 127.0.0.1 it signed), service-account
	// signing key, the admin's static token.
	certDir := filepath.Join(tmp, "pki")
	if err := os.MkdirAll(certDir, 0o700); err != nil {
		return c, err
	}
	certPEM, keyPEM, err := cert.GenerateSelfSignedCertKey("127.0.0.1", []net.IP{net.IPv4(127, 0, 0, 1)}, []string{"localhost"})
	if err != nil {
		return c, err
	}
	saKeyPEM, err := keyutil.MakeEllipticPrivateKeyPEM()
	if err != nil {
		return c, err
	}
	tokenBytes := make([]byte, 24)
	if _, err := rand.Read(tokenBytes); err != nil {
		return c, err
	}
	token := hex.EncodeToString(tokenBytes)
	files := map[string][]byte{
		"serving.crt": certPEM,
		"serving.key": keyPEM,
		"sa.key":      saKeyPEM,
		"tokens.csv":  []byte(token + `,finmesh-dry-run,finmesh-dry-run,"system:masters"` + "\n"),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(certDir, name), data, 0o600); err != nil {
			return c, err
		}
	}
	path := func(name string) string { return filepath.Join(certDir, name) }

	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return c, err
	}
	port := listener.Addr().(*net.TCPAddr).Port
	s := options.NewServerRunOptions()
	fs := pflag.NewFlagSet("kube-apiserver", pflag.ContinueOnError)
	for _, set := range s.Flags().FlagSets {
		fs.AddFlagSet(set)
	}
	flags := []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--endpoint-reconciler-type=none",
		fmt.Sprintf("--secure-port=%d", port),
		"--tls-cert-file=" + path("serving.crt"),
		"--tls-private-key-file=" + path("serving.key"),
		"--service-account-key-file=" + path("sa.key"),
		"--service-account-signing-key-file=" + path("sa.key"),
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--token-auth-file=" + path("tokens.csv"),
		"--anonymous-auth=false",
		"--authorization-mode=RBAC",
		"--service-cluster-ip-range=10.96.0.0/16",
		"--profiling=false",
	}
	if err := fs.Parse(flags); err != nil {
		listener.Close()
		return c, err
	}
	s.SecureServing.Listener = listener
	s.SecureServing.BindPort = port
	if err := s.GenericServerRunOptions.ComponentGlobalsRegistry.Set(); err != nil {
		return c, err
	}
	completed, err := s.Complete(ctx)
	if err != nil {
		return c, err
	}
	if errs := completed.Validate(); len(errs) != 0 {
		return c, fmt.Errorf("kube-apiserver options: %v", errs)
	}
	c.done = make(chan error, 1)
	go func() {
		defer close(c.done)
		c.done <- app.Run(ctx, completed)
	}()

	c.config = &rest.Config{
		Host:            fmt.Sprintf("https://127.0.0.1:%d", port),
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAData: certPEM},
		Timeout:         30 * time.Second,
	}
	clientset, err := kubernetes.NewForConfig(c.config)
	if err != nil {
		return c, err
	}
	// Ready: /readyz (etcd reachable, every post-start hook done, bootstrap RBAC in place) and the
	// default namespace created by the system namespaces controller.
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		select {
		case err := <-c.done:
			return false, fmt.Errorf("kube-apiserver stopped: %v", err)
		default:
		}
		status := 0
		clientset.Discovery().RESTClient().Get().AbsPath("/readyz").Do(ctx).StatusCode(&status)
		if status != 200 {
			return false, nil
		}
		_, err := clientset.CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	})
	if err != nil {
		return c, fmt.Errorf("kube-apiserver not ready: %w", err)
	}
	if info, err := clientset.Discovery().ServerVersion(); err == nil && info.GitVersion != "" && c.version == "" {
		c.version = info.GitVersion
	}
	return c, nil
}

// stop waits for the API server to return after its context was cancelled, then stops etcd.
func (c *cluster) stop() error {
	var err error
	if c.done != nil {
		select {
		case err = <-c.done:
		case <-time.After(time.Minute):
			err = fmt.Errorf("still running a minute after it was told to stop")
		}
	}
	if c.etcd != nil {
		c.etcd.Close()
	}
	return err
}

// kubernetesVersion is the version of the k8s.io/kubernetes module this program was built with.
func kubernetesVersion() string {
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, dep := range info.Deps {
			if dep.Path == "k8s.io/kubernetes" {
				return dep.Version
			}
		}
	}
	return ""
}

func sortedKeys(set map[string]bool) []string {
	keys := make([]string, 0, len(set))
	for key := range set {
		keys = append(keys, key)
	}
	sort.Strings(keys)
	return keys
}
