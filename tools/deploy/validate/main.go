// Command validate strictly decodes every object of rendered Kubernetes manifests offline.
//
// Kubernetes objects are decoded with client-go's scheme (the k8s.io/api types of the pinned
// release) by a strict deserializer: an unknown or duplicate field, a wrong type or an unknown
// apiVersion/kind is an error. Istio objects are decoded with istio.io/client-go's types, their
// spec with protojson (unknown fields refused), then checked with the Istio API's own rules
// that need no cluster (see istio.go). Usage: validate FILE... ; exit status 1 on any error.
package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

type header struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: validate FILE...")
		os.Exit(2)
	}
	failures, objects := 0, 0
	for _, path := range os.Args[1:] {
		docs, err := readDocuments(path)
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", path, err)
			failures++
			continue
		}
		for _, doc := range docs {
			objects++
			if err := validateDocument(doc); err != nil {
				fmt.Fprintf(os.Stderr, "%s: %v\n", path, err)
				failures++
			}
		}
	}
	if failures > 0 {
		fmt.Fprintf(os.Stderr, "validate: %d of %d objects invalid\n", failures, objects)
		os.Exit(1)
	}
	if objects == 0 {
		fmt.Fprintln(os.Stderr, "validate: no objects")
		os.Exit(1)
	}
	fmt.Printf("validate: %d objects valid\n", objects)
}

func readDocuments(path string) ([][]byte, error) {
	file, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer file.Close()
	reader := utilyaml.NewYAMLReader(bufio.NewReader(file))
	var docs [][]byte
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		if len(bytes.TrimSpace(stripComments(doc))) > 0 {
			docs = append(docs, doc)
		}
	}
}

func stripComments(doc []byte) []byte {
	var out bytes.Buffer
	for _, line := range strings.Split(string(doc), "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			out.WriteString(line + "\n")
		}
	}
	return out.Bytes()
}

func validateDocument(doc []byte) error {
	jsonDoc, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return fmt.Errorf("not valid YAML: %w", err)
	}
	var head header
	if err := yaml.Unmarshal(jsonDoc, &head); err != nil {
		return err
	}
	where := fmt.Sprintf("%s %s/%s", head.Kind, head.Metadata.Namespace, head.Metadata.Name)
	if head.APIVersion == "" || head.Kind == "" {
		return fmt.Errorf("%s: apiVersion and kind are required", where)
	}
	for _, problem := range validation.IsDNS1123Subdomain(head.Metadata.Name) {
		return fmt.Errorf("%s: metadata.name: %s", where, problem)
	}
	if isIstio(head.APIVersion) {
		err = validateIstio(head.APIVersion, head.Kind, jsonDoc)
	} else {
		err = validateKubernetes(jsonDoc)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}
	return nil
}
