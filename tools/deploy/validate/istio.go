package main

import (
	"encoding/json"
	"fmt"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"istio.io/istio/pkg/config"
	"istio.io/istio/pkg/config/schema/collections"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

func isIstio(apiVersion string) bool {
	return strings.HasSuffix(strings.SplitN(apiVersion, "/", 2)[0], ".istio.io")
}

// istioObject is the Kubernetes envelope of an Istio resource; every other top-level field is refused.
type istioObject struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   metav1.ObjectMeta `json:"metadata"`
	Spec       json.RawMessage   `json:"spec"`
}

// validateIstio decodes the spec strictly into the istio.io/api message of the kind (protojson,
// unknown fields refused) and runs Istio's own validation of that kind: the functions istiod's
// admission webhook and `istioctl validate` run (istio.io/istio/pkg/config/validation).
func validateIstio(apiVersion, kind string, jsonDoc []byte) error {
	gv, err := schema.ParseGroupVersion(apiVersion)
	if err != nil {
		return err
	}
	gvk := config.GroupVersionKind{Group: gv.Group, Version: gv.Version, Kind: kind}
	resource, known := collections.Pilot.FindByGroupVersionAliasesKind(gvk)
	if !known {
		return fmt.Errorf("istio schema: unknown apiVersion/kind %s %s", apiVersion, kind)
	}
	var object istioObject
	decoder := json.NewDecoder(strings.NewReader(string(jsonDoc)))
	decoder.DisallowUnknownFields()
	if err := decoder.Decode(&object); err != nil {
		return fmt.Errorf("istio schema: %w", err)
	}
	if object.Metadata.Namespace == "" {
		return fmt.Errorf("istio: metadata.namespace is required")
	}
	spec, err := resource.NewInstance()
	if err != nil {
		return err
	}
	message, isProto := spec.(proto.Message)
	if !isProto {
		return fmt.Errorf("istio schema: %s is not a protobuf message", kind)
	}
	if len(object.Spec) > 0 {
		if err := (protojson.UnmarshalOptions{}).Unmarshal(object.Spec, message); err != nil {
			return fmt.Errorf("istio schema: spec: %w", err)
		}
	}
	cfg := config.Config{
		Meta: config.Meta{
			GroupVersionKind: resource.GroupVersionKind(),
			Name:             object.Metadata.Name,
			Namespace:        object.Metadata.Namespace,
			Labels:           object.Metadata.Labels,
			Annotations:      object.Metadata.Annotations,
		},
		Spec: spec,
	}
	warnings, err := resource.ValidateConfig(cfg)
	if err != nil {
		return fmt.Errorf("istio validation: %w", err)
	}
	if warnings != nil && !acceptedWarning(kind, warnings.Error()) {
		return fmt.Errorf("istio validation warning (treated as an error): %v", warnings)
	}
	return nil
}

// acceptedWarning: the one warning accepted on purpose. Istio warns on every EnvoyFilter; the chart
// uses two (ingress rate limits, failure-percentage ejection), which the typed APIs cannot express.
func acceptedWarning(kind, warning string) bool {
	return kind == "EnvoyFilter" && strings.TrimSpace(warning) == envoyFilterWarning
}

const envoyFilterWarning = "EnvoyFilter exposes internal implementation details that may change at any time. " +
	"Prefer other APIs if possible, and exercise extreme caution, especially around upgrades."
