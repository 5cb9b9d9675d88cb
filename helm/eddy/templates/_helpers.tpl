{{/*
Names, labels and shared pieces of the Eddy chart.
*/}}

{{- define "eddy.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every resource name: <release>-eddy, or the release name when it already
contains the chart name.
*/}}
{{- define "eddy.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "eddy.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels. Call with (dict "root" $ "component" "<name>").
*/}}
{{- define "eddy.selectorLabels" -}}
app.kubernetes.io/name: {{ include "eddy.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- if .component }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end }}

{{/*
Every label. Call with (dict "root" $ "component" "<name>"); component may be "".
*/}}
{{- define "eddy.labels" -}}
helm.sh/chart: {{ include "eddy.chart" .root }}
{{ include "eddy.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Values.image.tag | default .root.Chart.AppVersion | toString | replace "+" "_" | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: eddy
{{- end }}

{{- define "eddy.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion | toString) }}
{{- end }}
{{- end }}

{{- define "eddy.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "eddy.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret with `system-token` and `secret-key`. */}}
{{- define "eddy.authSecretName" -}}
{{- if .Values.auth.existingSecret }}
{{- .Values.auth.existingSecret }}
{{- else }}
{{- printf "%s-auth" (include "eddy.fullname" .) }}
{{- end }}
{{- end }}

{{/* The Secret the chart creates for the Kafka SASL and registry passwords given in values. */}}
{{- define "eddy.platformSecretName" -}}
{{- printf "%s-platform" (include "eddy.fullname" .) }}
{{- end }}

{{- define "eddy.kafkaUsesSasl" -}}
{{- if hasPrefix "sasl-" .Values.kafka.securityProtocol }}true{{ end }}
{{- end }}

{{- define "eddy.kafkaUsesCa" -}}
{{- if or .Values.kafka.tls.caSecret .Values.kafka.tls.caConfigMap }}true{{ end }}
{{- end }}

{{/* "true" when the chart must create the platform Secret. */}}
{{- define "eddy.platformSecretNeeded" -}}
{{- if or (and (include "eddy.kafkaUsesSasl" .) .Values.kafka.sasl.password (not .Values.kafka.sasl.existingSecret)) (and .Values.schemaRegistry.password (not .Values.schemaRegistry.existingSecret)) }}true{{ end }}
{{- end }}

{{/*
A duration (500ms, 30s, 5m, 2h; as the components parse them) in whole seconds, or "" when it
cannot be read.
*/}}
{{- define "eddy.durationSeconds" -}}
{{- $text := toString . | trim }}
{{- if regexMatch "^[0-9]+(s)?$" $text }}
{{- trimSuffix "s" $text }}
{{- else if regexMatch "^[0-9]+m$" $text }}
{{- mul (trimSuffix "m" $text | atoi) 60 }}
{{- else if regexMatch "^[0-9]+h$" $text }}
{{- mul (trimSuffix "h" $text | atoi) 3600 }}
{{- else if regexMatch "^[0-9]+ms$" $text }}
{{- div (trimSuffix "ms" $text | atoi) 1000 }}
{{- end }}
{{- end }}

{{/*
Fails when terminationGracePeriodSeconds does not exceed the shutdown grace.
Call with (dict "what" "<name>" "grace" <shutdownGrace> "termination" <seconds>).
*/}}
{{- define "eddy.checkGrace" -}}
{{- $seconds := include "eddy.durationSeconds" .grace }}
{{- if and $seconds (le (int .termination) (int $seconds)) }}
{{- fail (printf "%s: terminationGracePeriodSeconds (%d) must be longer than its shutdownGrace (%s), or Kubernetes kills it while it drains" .what (int .termination) (toString .grace)) }}
{{- end }}
{{- end }}

{{/*
One component entry merged over componentDefaults, written into .out (a dict): keys the entry
does not set come from componentDefaults, and maps are merged one level deep (the entry's keys
win). Adds "name" and "binary" (default eddy-<name>).
Call with (dict "root" $ "name" "<name>" "entry" <entry> "out" (dict)).
*/}}
{{- define "eddy.mergeComponent" -}}
{{- $defaults := .root.Values.componentDefaults | default dict }}
{{- $entry := .entry | default dict }}
{{- $out := .out }}
{{- range $key, $value := $defaults }}
{{- if not (hasKey $entry $key) }}
{{- if kindIs "map" $value }}
{{- $_ := set $out $key (deepCopy $value) }}
{{- else }}
{{- $_ := set $out $key $value }}
{{- end }}
{{- else if and (kindIs "map" $value) (kindIs "map" (get $entry $key)) }}
{{- $merged := deepCopy $value }}
{{- range $k, $v := get $entry $key }}
{{- $_ := set $merged $k $v }}
{{- end }}
{{- $_ := set $out $key $merged }}
{{- else }}
{{- $_ := set $out $key (get $entry $key) }}
{{- end }}
{{- end }}
{{- range $key, $value := $entry }}
{{- if not (hasKey $defaults $key) }}
{{- $_ := set $out $key $value }}
{{- end }}
{{- end }}
{{- $_ := set $out "name" .name }}
{{- if not $out.binary }}
{{- $_ := set $out "binary" (printf "eddy-%s" .name) }}
{{- end }}
{{- if not $out.routes }}
{{- $_ := set $out "routes" list }}
{{- end }}
{{- end }}

{{/*
Every enabled component, merged with componentDefaults, written into .out keyed by name; checks
what the schema cannot (name lengths, routes claimed twice, grace periods).
Call with (dict "root" $ "out" (dict)).
*/}}
{{- define "eddy.components" -}}
{{- $root := .root }}
{{- $out := .out }}
{{- $fullname := include "eddy.fullname" $root }}
{{- $owners := dict }}
{{- range $name, $entry := $root.Values.components }}
{{- $component := dict }}
{{- include "eddy.mergeComponent" (dict "root" $root "name" $name "entry" $entry "out" $component) }}
{{- if $component.enabled }}
{{- if and (eq $name "gateway") $root.Values.gateway.enabled }}
{{- fail "components.gateway collides with the gateway (gateway.enabled): name the component differently" }}
{{- end }}
{{- $resource := printf "%s-%s" $fullname $name }}
{{- if gt (len $resource) 52 }}
{{- fail (printf "component %s: the name %s is %d characters long, at most 52 fit (the StatefulSet's pods carry it in a 63-character label): shorten the release name, fullnameOverride or the component's name" $name $resource (len $resource)) }}
{{- end }}
{{- range $route := $component.routes }}
{{- if hasKey $owners $route }}
{{- fail (printf "the route /%s.* is claimed by both %s and %s: an API path can have one component only (give one of them routes: [])" $route (get $owners $route) $name) }}
{{- end }}
{{- $_ := set $owners $route $name }}
{{- end }}
{{- include "eddy.checkGrace" (dict "what" (printf "component %s" $name) "grace" $component.shutdownGrace "termination" $component.terminationGracePeriodSeconds) }}
{{- $_ := set $out $name $component }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Kafka and schema registry settings: the env of every Kafka client (components, the init
containers, the provisioning Job).
*/}}
{{- define "eddy.platformEnv" -}}
{{- $kafka := .Values.kafka }}
{{- $registry := .Values.schemaRegistry }}
- name: EDDY_KAFKA_BOOTSTRAP_SERVERS
  value: {{ $kafka.bootstrapServers | quote }}
- name: EDDY_KAFKA_SECURITY_PROTOCOL
  value: {{ $kafka.securityProtocol | quote }}
{{- if include "eddy.kafkaUsesSasl" . }}
- name: EDDY_KAFKA_SASL_MECHANISM
  value: {{ required "kafka.sasl.mechanism is required with a sasl-* kafka.securityProtocol (plain, scram-sha-256 or scram-sha-512)" $kafka.sasl.mechanism | quote }}
{{- if $kafka.sasl.username }}
- name: EDDY_KAFKA_SASL_USERNAME
  value: {{ $kafka.sasl.username | quote }}
{{- end }}
{{- if $kafka.sasl.existingSecret }}
- name: EDDY_KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $kafka.sasl.existingSecret | quote }}
      key: {{ $kafka.sasl.existingSecretKey | default "password" | quote }}
{{- else if $kafka.sasl.password }}
- name: EDDY_KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "eddy.platformSecretName" . }}
      key: kafka-sasl-password
{{- end }}
{{- end }}
{{- if include "eddy.kafkaUsesCa" . }}
- name: EDDY_KAFKA_SSL_CA_LOCATION
  value: {{ printf "/etc/eddy/kafka-ca/%s" $kafka.tls.caKey | quote }}
{{- end }}
{{- if $kafka.properties }}
{{- $pairs := list }}
{{- range $key, $value := $kafka.properties }}
{{- $pairs = append $pairs (printf "%s=%v" $key $value) }}
{{- end }}
- name: EDDY_KAFKA_PROPERTIES
  value: {{ join "," $pairs | quote }}
{{- end }}
- name: EDDY_SCHEMA_REGISTRY_URL
  value: {{ required "schemaRegistry.url is required" $registry.url | quote }}
{{- if $registry.username }}
- name: EDDY_SCHEMA_REGISTRY_USERNAME
  value: {{ $registry.username | quote }}
{{- end }}
{{- if $registry.existingSecret }}
- name: EDDY_SCHEMA_REGISTRY_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $registry.existingSecret | quote }}
      key: {{ $registry.existingSecretKey | default "password" | quote }}
{{- else if $registry.password }}
- name: EDDY_SCHEMA_REGISTRY_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "eddy.platformSecretName" . }}
      key: schema-registry-password
{{- end }}
{{- end }}

{{/* The topic catalog's settings. */}}
{{- define "eddy.topicEnv" -}}
{{- if .Values.topics.namespace }}
- name: EDDY_TOPIC_NAMESPACE
  value: {{ .Values.topics.namespace | quote }}
{{- end }}
- name: EDDY_TOPIC_PARTITIONS
  value: {{ .Values.topics.partitions | int | quote }}
{{- if gt (int .Values.topics.replicationFactor) 0 }}
- name: EDDY_TOPIC_REPLICATION_FACTOR
  value: {{ .Values.topics.replicationFactor | int | quote }}
{{- end }}
{{- end }}

{{/* Extra settings (name: value) as env entries. */}}
{{- define "eddy.envMap" -}}
{{- range $name, $value := . }}
- name: {{ $name }}
  value: {{ toString $value | quote }}
{{- end }}
{{- end }}

{{/* Volume mounts every container has: /tmp and the Kafka CA. */}}
{{- define "eddy.commonVolumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if include "eddy.kafkaUsesCa" . }}
- name: kafka-ca
  mountPath: /etc/eddy/kafka-ca
  readOnly: true
{{- end }}
{{- end }}

{{/* Volumes every pod has: /tmp and the Kafka CA. */}}
{{- define "eddy.commonVolumes" -}}
- name: tmp
  emptyDir: {}
{{- if .Values.kafka.tls.caSecret }}
- name: kafka-ca
  secret:
    secretName: {{ .Values.kafka.tls.caSecret | quote }}
    items:
      - key: {{ .Values.kafka.tls.caKey | quote }}
        path: {{ .Values.kafka.tls.caKey | quote }}
{{- else if .Values.kafka.tls.caConfigMap }}
- name: kafka-ca
  configMap:
    name: {{ .Values.kafka.tls.caConfigMap | quote }}
    items:
      - key: {{ .Values.kafka.tls.caKey | quote }}
        path: {{ .Values.kafka.tls.caKey | quote }}
{{- end }}
{{- end }}

{{/* The init container that waits for Kafka and the schema registry. */}}
{{- define "eddy.waitInitContainer" -}}
{{- if .Values.waitForPlatform.enabled }}
- name: wait-for-platform
  image: {{ include "eddy.image" . | quote }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  command: ["/usr/local/bin/eddy", "platform", "wait"]
  env:
    - name: EDDY_WAIT_TIMEOUT
      value: {{ .Values.waitForPlatform.timeout | quote }}
    - name: EDDY_LOG
      value: {{ .Values.log.level | quote }}
    {{- include "eddy.platformEnv" . | trim | nindent 4 }}
  {{- with .Values.waitForPlatform.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
  volumeMounts:
    {{- include "eddy.commonVolumeMounts" . | trim | nindent 4 }}
{{- end }}
{{- end }}

{{/*
A checksum of the settings held in Secrets, so that pods restart when they change.
*/}}
{{- define "eddy.secretsChecksum" -}}
{{- list .Values.auth .Values.kafka .Values.schemaRegistry | toJson | sha256sum }}
{{- end }}

{{/*
A PodDisruptionBudget spec's budget. Call with the podDisruptionBudget values.
*/}}
{{- define "eddy.pdbBudget" -}}
{{- if and (hasKey . "minAvailable") (not (kindIs "invalid" .minAvailable)) }}
minAvailable: {{ if kindIs "string" .minAvailable }}{{ .minAvailable | quote }}{{ else }}{{ .minAvailable | int }}{{ end }}
{{- else }}
maxUnavailable: {{ if kindIs "string" .maxUnavailable }}{{ .maxUnavailable | quote }}{{ else if kindIs "invalid" .maxUnavailable }}1{{ else }}{{ .maxUnavailable | int }}{{ end }}
{{- end }}
{{- end }}

{{/*
The command of a component's or the gateway's container: its binary, under eddy-dev-run when
liveUpdate is on (Tilt restarts it in place with a newly synced binary). Called with
(dict "root" $ "binary" "eddy-<name>").
*/}}
{{- define "eddy.mainCommand" -}}
{{- $path := printf "/usr/local/bin/%s" .binary -}}
{{- if .root.Values.liveUpdate.enabled -}}
["/usr/local/bin/eddy-dev-run", {{ $path | quote }}]
{{- else -}}
[{{ $path | quote }}]
{{- end -}}
{{- end }}

{{/*
The security context of a component's or the gateway's container: securityContext, with a
writable root file system when liveUpdate is on (Tilt syncs binaries into it).
*/}}
{{- define "eddy.mainSecurityContext" -}}
{{- if .Values.liveUpdate.enabled -}}
{{- $context := deepCopy .Values.securityContext }}
{{- $_ := set $context "readOnlyRootFilesystem" false }}
{{- toYaml $context }}
{{- else -}}
{{- toYaml .Values.securityContext }}
{{- end -}}
{{- end }}
