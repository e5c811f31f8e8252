// Command apiserver sends every object of rendered manifests to a real Kubernetes API server as a
// server-side dry-run create, so that what only admission catches (defaulting then validation of
// every built-in kind, the OpenAPI schemas and CEL rules of Istio's CRDs, strict field validation)
// is caught before a cluster sees the chart.
//
// It starts, in this process and on 127.0.0.1 only, an embedded etcd (data in a temporary
// directory) and the kube-apiserver of the pinned Kubernetes release (k8s.io/kubernetes used as a
// library), with a generated serving certificate, generated service-account keys and a static
// bearer token for its one client. It then creates the namespaces the manifests use and Istio's
// CRDs (embedded in the istio.io/istio module the offline validator also uses), and for every
// object of every FILE sends a create with dryRun=All and fieldValidation=Strict. Nothing is
// persisted but the namespaces and CRDs, and everything is removed at the end.
//
// The namespaces carry pod-security.kubernetes.io/warn (default: restricted), so the PodSecurity
// admission plugin checks every pod template against that Pod Security Standard.
//
// Usage: apiserver [-namespace NS] [-pod-security LEVEL] [-log FILE] FILE...  (the profile is FILE's base name without
// .yaml). One line per refused object on stdout: "FAIL profile kind namespace/name: message",
// one per warning the server returned: "WARN ...", then a summary per profile. Exit status 1
// on any refusal or warning, 2 when the servers cannot be started.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"istio.io/istio/manifests"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/yaml"
)

// istioCRDs is the file of Istio's base chart that holds every Istio CRD, in istio.io/istio/manifests.
const istioCRDs = "charts/base/files/crd-all.gen.yaml"

type object struct {
	profile string
	obj     *unstructured.Unstructured
}

func main() {
	namespace := flag.String("namespace", "finmesh", "namespace of namespaced objects that name none (helm's release namespace)")
	podSecurity := flag.String("pod-security", "restricted", "Pod Security Standard the created namespaces warn about (label pod-security.kubernetes.io/warn); a pod template below it gives WARN lines")
	logPath := flag.String("log", "", "file that receives etcd's and kube-apiserver's logs (default: a file in the temporary directory, printed on a startup failure)")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: apiserver [-namespace NS] [-pod-security LEVEL] [-log FILE] FILE...")
		os.Exit(2)
	}
	os.Exit(run(*namespace, *podSecurity, *logPath, flag.Args()))
}

func run(namespace, podSecurity, logPath string, paths []string) int {
	var objects []object
	profiles := []string{}
	for _, path := range paths {
		profile := strings.TrimSuffix(filepath.Base(path), ".yaml")
		docs, err := readObjects(path)
		if err != nil {
			fmt.Printf("FAIL %s: %v\n", profile, err)
			return 1
		}
		profiles = append(profiles, profile)
		for _, doc := range docs {
			objects = append(objects, object{profile: profile, obj: doc})
		}
	}
	crds, err := readIstioCRDs()
	if err != nil {
		fmt.Printf("istio CRDs: %v\n", err)
		return 2
	}

	tmp, err := os.MkdirTemp("", "finmesh-apiserver-")
	if err != nil {
		fmt.Println(err)
		return 2
	}
	defer os.RemoveAll(tmp)
	if logPath == "" {
		logPath = filepath.Join(tmp, "servers.log")
	}
	// etcd (zap) and the API server (klog) log to the process's standard error: send fd 2 to the
	// log file, keep this program's own output on stdout.
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		fmt.Println(err)
		return 2
	}
	defer logFile.Close()
	if err := syscall.Dup3(int(logFile.Fd()), 2, 0); err != nil {
		fmt.Println("redirect standard error:", err)
		return 2
	}
	showLog := func() {
		data, _ := os.ReadFile(logPath)
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		if len(lines) > 40 {
			lines = lines[len(lines)-40:]
		}
		fmt.Printf("last lines of %s:\n%s\n", logPath, strings.Join(lines, "\n"))
	}

	started := time.Now()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cluster, err := startCluster(ctx, tmp)
	if err != nil {
		fmt.Printf("starting etcd and kube-apiserver: %v\n", err)
		showLog()
		if cluster != nil {
			cancel()
			cluster.stop()
		}
		return 2
	}
	defer func() {
		cancel()
		if err := cluster.stop(); err != nil {
			fmt.Printf("stopping kube-apiserver: %v\n", err)
		}
	}()
	fmt.Printf("kube-apiserver %s on %s (etcd %s) ready in %.1fs\n", cluster.version, cluster.config.Host, cluster.etcdURL, time.Since(started).Seconds())

	code, err := dryRun(ctx, cluster, namespace, podSecurity, crds, objects, profiles)
	if err != nil {
		fmt.Println(err)
		showLog()
		return 2
	}
	return code
}

// warnings collects the Warning headers of the one request in flight (requests are sequential).
type warnings struct{ texts []string }

func (w *warnings) HandleWarningHeader(_ int, _ string, text string) { w.texts = append(w.texts, text) }

func (w *warnings) take() []string {
	texts := w.texts
	w.texts = nil
	return texts
}

func dryRun(ctx context.Context, cluster *cluster, namespace, podSecurity string, crds []*unstructured.Unstructured, objects []object, profiles []string) (int, error) {
	config := rest.CopyConfig(cluster.config)
	seen := &warnings{}
	config.WarningHandler = seen
	config.QPS, config.Burst = 500, 1000
	client, err := dynamic.NewForConfig(config)
	if err != nil {
		return 0, err
	}
	disco, err := discovery.NewDiscoveryClientForConfig(config)
	if err != nil {
		return 0, err
	}

	// The namespaces the objects are in, then Istio's CRDs, created for real.
	namespaces := map[string]bool{namespace: true}
	for _, o := range objects {
		if ns := o.obj.GetNamespace(); ns != "" {
			namespaces[ns] = true
		}
	}
	nsResource := client.Resource(schema.GroupVersionResource{Version: "v1", Resource: "namespaces"})
	for ns := range namespaces {
		obj := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{
				"name":   ns,
				"labels": map[string]any{"pod-security.kubernetes.io/warn": podSecurity},
			},
		}}
		if _, err := nsResource.Create(ctx, obj, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return 0, fmt.Errorf("create namespace %s: %w", ns, err)
		}
	}
	crdResource := client.Resource(schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"})
	for _, crd := range crds {
		if _, err := crdResource.Create(ctx, crd, metav1.CreateOptions{FieldValidation: "Strict"}); err != nil {
			return 0, fmt.Errorf("create Istio CRD %s: %w", crd.GetName(), err)
		}
	}
	for _, crd := range crds {
		err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			got, err := crdResource.Get(ctx, crd.GetName(), metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			conditions, _, _ := unstructured.NestedSlice(got.Object, "status", "conditions")
			for _, c := range conditions {
				condition, _ := c.(map[string]any)
				if condition["type"] == "Established" && condition["status"] == "True" {
					return true, nil
				}
			}
			return false, nil
		})
		if err != nil {
			return 0, fmt.Errorf("Istio CRD %s not established: %w", crd.GetName(), err)
		}
	}
	seen.take()
	fmt.Printf("created %d namespaces (%s; Pod Security warn=%s) and %d Istio CRDs\n", len(namespaces), strings.Join(sortedKeys(namespaces), ", "), podSecurity, len(crds))

	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disco))
	accepted := map[string]int{}
	total := map[string]int{}
	failures, warned := 0, 0
	for _, o := range objects {
		total[o.profile]++
		gvk := o.obj.GroupVersionKind()
		ns := o.obj.GetNamespace()
		where := func() string {
			if ns == "" {
				return o.obj.GetName()
			}
			return ns + "/" + o.obj.GetName()
		}
		fail := func(message string) {
			failures++
			fmt.Printf("FAIL %s %s %s: %s\n", o.profile, gvk.Kind, where(), message)
		}
		mapping, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			fail(fmt.Sprintf("%s is not served: %v", gvk.GroupVersion(), err))
			continue
		}
		var resource dynamic.ResourceInterface = client.Resource(mapping.Resource)
		if mapping.Scope.Name() == meta.RESTScopeNameNamespace {
			if ns == "" {
				ns = namespace
			}
			resource = client.Resource(mapping.Resource).Namespace(ns)
		}
		_, err = resource.Create(ctx, o.obj, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}, FieldValidation: "Strict"})
		for _, text := range seen.take() {
			warned++
			fmt.Printf("WARN %s %s %s: %s\n", o.profile, gvk.Kind, where(), text)
		}
		if err != nil {
			fail(err.Error())
			continue
		}
		accepted[o.profile]++
	}
	all := 0
	for _, profile := range profiles {
		all += accepted[profile]
		fmt.Printf("%-24s %4d of %4d objects accepted\n", profile, accepted[profile], total[profile])
	}
	fmt.Printf("dry-run: %d of %d objects of %d profiles accepted by kube-apiserver %s, %d refused, %d warnings\n",
		all, len(objects), len(profiles), cluster.version, failures, warned)
	// A warning (a deprecated field or API, a pod template below the Pod Security level, a value
	// the server accepts but misreads) fails the run as well, as in the offline validator.
	if failures > 0 || warned > 0 {
		return 1, nil
	}
	if len(objects) == 0 {
		fmt.Println("dry-run: no objects")
		return 1, nil
	}
	return 0, nil
}

func readObjects(path string) ([]*unstructured.Unstructured, error) {
	file, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer file.Close()
	return decodeDocuments(file)
}

func readIstioCRDs() ([]*unstructured.Unstructured, error) {
	file, err := manifests.FS.Open(istioCRDs)
	if err != nil {
		return nil, err
	}
	defer file.Close()
	crds, err := decodeDocuments(file)
	if err != nil {
		return nil, err
	}
	for _, crd := range crds {
		if crd.GetKind() != "CustomResourceDefinition" {
			return nil, fmt.Errorf("%s holds a %s", istioCRDs, crd.GetKind())
		}
	}
	return crds, nil
}

func decodeDocuments(r io.Reader) ([]*unstructured.Unstructured, error) {
	reader := utilyaml.NewYAMLReader(bufio.NewReaderSize(r, 1<<20))
	var objects []*unstructured.Unstructured
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return objects, nil
		}
		if err != nil {
			return nil, err
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		jsonDoc, err := yaml.YAMLToJSON(doc)
		if err != nil {
			return nil, err
		}
		if string(jsonDoc) == "null" {
			continue
		}
		obj := &unstructured.Unstructured{}
		if err := obj.UnmarshalJSON(jsonDoc); err != nil {
			return nil, err
		}
		objects = append(objects, obj)
	}
}

func stripComments(doc []byte) []byte {
	var out []byte
	for _, line := range bytes.Split(doc, []byte("\n")) {
		if !bytes.HasPrefix(bytes.TrimSpace(line), []byte("#")) {
			out = append(out, line...)
			out = append(out, '\n')
		}
	}
	return out
}
