package main

import (
	"fmt"

	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/kubernetes/scheme"
)

// strictDecoder refuses unknown and duplicate fields and unknown apiVersion/kind pairs.
var strictDecoder = serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict).UniversalDeserializer()

func validateKubernetes(jsonDoc []byte) error {
	if _, _, err := strictDecoder.Decode(jsonDoc, nil, nil); err != nil {
		return fmt.Errorf("kubernetes schema: %w", err)
	}
	return nil
}
