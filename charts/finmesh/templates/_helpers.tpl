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

{{/* The service's own settings (.name, .svc, .root): config.redisUrl when it reads Redis, then
   serviceSettings.<name> of the values. Literals only in `settings` (JSON for non-strings);
   `secretSettings` and `secretFiles` only reference Secrets. The migration Jobs get none of it. */}}
{{- define "finmesh.settingsEnv" -}}
{{- $own := include "finmesh.ownSettings" . | fromJson -}}
{{- if .svc.redis }}
- name: FINMESH_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .root.Values.config.redisUrl.name }}
      key: {{ .root.Values.config.redisUrl.key }}
{{- end }}
{{- range $setting, $value := $own.settings }}
- name: FINMESH_{{ $setting }}
  value: {{ if kindIs "string" $value }}{{ $value | quote }}{{ else }}{{ toJson $value | quote }}{{ end }}
{{- end }}
{{- range $setting, $ref := $own.secretSettings }}
- name: FINMESH_{{ $setting }}
  valueFrom:
    secretKeyRef:
      name: {{ $ref.secret }}
      key: {{ $ref.key }}
{{- end }}
{{- range $setting, $ref := $own.secretFiles }}
- name: FINMESH_{{ $setting }}
  value: {{ printf "%s/%s" (include "finmesh.secretFileDir" $setting) $ref.key | quote }}
{{- end }}
{{- end -}}

{{- define "finmesh.settingsMounts" -}}
{{- $own := include "finmesh.ownSettings" . | fromJson -}}
{{- range $setting, $ref := $own.secretFiles }}
- name: {{ include "finmesh.secretFileVolume" $setting }}
  mountPath: {{ include "finmesh.secretFileDir" $setting }}
  readOnly: true
{{- end }}
{{- end -}}

{{- define "finmesh.settingsVolumes" -}}
{{- $own := include "finmesh.ownSettings" . | fromJson -}}
{{- range $setting, $ref := $own.secretFiles }}
- name: {{ include "finmesh.secretFileVolume" $setting }}
  secret:
    secretName: {{ $ref.secret }}
    # 0440: the pod's group (fsGroup) reads the key; nobody writes it.
    defaultMode: 288
    items:
      - {key: {{ $ref.key | quote }}, path: {{ $ref.key | quote }}}
{{- end }}
{{- end -}}

{{/* serviceSettings.<name> with every map present; a setting given twice (a literal and a
   reference, or X next to X_FILE, which the services refuse at start) fails the render. */}}
{{- define "finmesh.ownSettings" -}}
{{- $own := index (.root.Values.serviceSettings | default dict) .name | default dict -}}
{{- $out := dict "settings" ($own.settings | default dict) "secretSettings" ($own.secretSettings | default dict) "secretFiles" ($own.secretFiles | default dict) -}}
{{- $seen := dict -}}
{{- range $kind := list "settings" "secretSettings" "secretFiles" -}}
{{- range $setting, $_ := index $out $kind -}}
{{- if hasKey $seen $setting -}}
{{- fail (printf "serviceSettings.%s: %s is in both %s and %s; give it once" $.name $setting (index $seen $setting) $kind) -}}
{{- end -}}
{{- $_ := set $seen $setting $kind -}}
{{- end -}}
{{- end -}}
{{- range $setting, $_ := $out.secretFiles -}}
{{- $inline := trimSuffix "_FILE" $setting -}}
{{- if hasKey $seen $inline -}}
{{- fail (printf "serviceSettings.%s: %s and %s are both given; the service takes one of them" $.name $inline $setting) -}}
{{- end -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{- define "finmesh.secretFileDir" -}}
/etc/finmesh/secrets/{{ . | lower | replace "_" "-" }}
{{- end -}}

{{- define "finmesh.secretFileVolume" -}}
secret-{{ . | lower | replace "_" "-" }}
{{- end -}}
