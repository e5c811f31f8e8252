{{/* Services of the profile that this release deploys: optional ones only with deployOptional. */}}
{{- define "finmesh.enabled" -}}
{{- $out := dict -}}
{{- range $name, $svc := .Values.services -}}
{{- if and (ne (toString $svc.enabled) "false") (or (not $svc.optional) $.Values.deployOptional) -}}
{{- $_ := set $out $name $svc -}}
{{- end -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{- define "finmesh.labels" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/part-of: finmesh
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ .root.Chart.Name }}-{{ .root.Chart.Version | replace "+" "_" }}
finmesh.io/profile: {{ .root.Values.profile }}
{{- end -}}

{{- define "finmesh.selector" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{- define "finmesh.image" -}}
{{- $image := .Values.image -}}
{{- if $image.digest -}}{{ $image.repository }}@{{ $image.digest }}{{- else -}}{{ $image.repository }}:{{ $image.tag }}{{- end -}}
{{- end -}}

{{/* Pod security: non-root, no privilege escalation, read-only root, no capabilities, RuntimeDefault seccomp. */}}
{{- define "finmesh.podSecurity" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "finmesh.containerSecurity" -}}
runAsNonRoot: true
runAsUser: 10001
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* FINMESH_* configuration of one service (.name, .svc, .root); secrets by reference only. */}}
{{- define "finmesh.env" -}}
{{- $ns := .root.Release.Namespace -}}
{{- $config := .root.Values.config -}}
{{- $endpoints := dict -}}
{{- range $callee, $other := .root.Values.services -}}
{{- $_ := set $endpoints $callee (printf "%s.%s.svc.cluster.local:%v" $callee $ns $other.port) -}}
{{- end -}}
- name: FINMESH_HOST
  value: "0.0.0.0"
- name: FINMESH_PORT
  value: {{ .svc.port | quote }}
- name: FINMESH_METRICS_PORT
  value: {{ .svc.metricsPort | quote }}
- name: FINMESH_TLS
  value: "false"
- name: FINMESH_DATA_DIR
  value: /tmp/finmesh
- name: FINMESH_LOG_LEVEL
  value: {{ .root.Values.defaults.logLevel }}
- name: FINMESH_BUS
  value: kafka
- name: FINMESH_KAFKA_BOOTSTRAP_SERVERS
  value: {{ $config.kafkaBootstrapServers | quote }}
- name: FINMESH_DATABASE_SCHEMA
  value: {{ .name | replace "-" "_" }}
- name: FINMESH_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ $config.databaseUrl.secretPrefix }}-{{ .name }}
      key: {{ $config.databaseUrl.key }}
- name: FINMESH_JWT_PUBLIC_KEYS_FILE
  value: /etc/finmesh/jwt/{{ $config.jwtPublicKeys.key }}
- name: FINMESH_JWT_ISSUER
  value: {{ $config.jwtIssuer | quote }}
- name: FINMESH_JWT_AUDIENCE
  value: {{ $config.jwtAudience | quote }}
- name: FINMESH_ENDPOINTS
  value: {{ toJson $endpoints | quote }}
{{- end -}}
