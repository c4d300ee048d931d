{{- define "cw.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "cw.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "cw.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cw.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "cw.labels" -}}
{{ include "cw.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The values that do not fit together fail the render with a sentence. */}}
{{- define "cw.check" -}}
{{- if not (has .Values.mode (list "sidecar" "spawn" "consul")) -}}
{{- fail (printf "mode %q: use sidecar, spawn or consul" .Values.mode) -}}
{{- end -}}
{{- if and (eq .Values.mode "sidecar") (lt (int .Values.workers) 1) -}}
{{- fail "workers: sidecar mode needs a number of workers (one per CPU of app.resources.limits.cpu)" -}}
{{- end -}}
{{- if and (eq .Values.mode "consul") (not .Values.consul.source.service) -}}
{{- fail "consul.source.service: consul mode needs the name of the workers' Consul service" -}}
{{- end -}}
{{- end -}}

{{- define "cw.caddyImage" -}}
{{- if eq .Values.mode "spawn" -}}
{{ .Values.image.node.repository }}:{{ .Values.image.node.tag }}
{{- else -}}
{{ .Values.image.caddy.repository }}:{{ .Values.image.caddy.tag }}
{{- end -}}
{{- end -}}

{{/* The Caddyfile that the ConfigMap holds. */}}
{{- define "cw.caddyfile" -}}
{
	# Config comes from this file only: no admin endpoint on the pod's
	# loopback.
	admin off
	persist_config off
	# TLS ends at the Ingress or load balancer in front of the Service.
	auto_https off
	grace_period {{ .Values.gracePeriod }}
	# A client gets 10 s to send a request's headers (Caddy's default is
	# a minute): connections that trickle them are closed sooner. A
	# request that declares its body's length twice gets 400 and a closed
	# connection (request smuggling; see docs/security.md in the repository).
	servers {
		timeouts {
			read_header 10s
		}
		listener_wrappers {
			worker_pool_framing
		}
	}
}

# The site, behind the Service.
:{{ .Values.ports.http }} {
{{- if .Values.otel.endpoint }}
	tracing
{{- end }}
	worker_pool {
		name {{ .Values.pool.name }}
{{- if eq .Values.mode "sidecar" }}
		discover 127.0.0.1:{{ .Values.portBase }}-{{ add .Values.portBase .Values.workers -1 }}
{{- else if eq .Values.mode "spawn" }}
		command {{ join " " .Values.app.command }}
{{- if .Values.app.dir }}
		dir {{ .Values.app.dir }}
{{- end }}
		count {{ if gt (int .Values.workers) 0 }}{{ .Values.workers }}{{ else }}{$WORKERS:auto}{{ end }}
{{- else }}
		consul {{ .Values.consul.source.service }} {
{{- with .Values.consul.source.tags }}
			tags {{ join " " . }}
{{- end }}
{{- with .Values.consul.source.datacenter }}
			datacenter {{ . }}
{{- end }}
		}
{{- end }}
		health_uri {{ .Values.pool.healthUri }}
		health_interval {{ .Values.pool.healthInterval }}
		stop_timeout {{ .Values.pool.stopTimeout }}
		max_inflight {{ .Values.pool.maxInflight }}
{{- range splitList "\n" (trim .Values.pool.options) }}
{{- with trim . }}
		{{ . }}
{{- end }}
{{- end }}
{{- if .Values.consul.register.enabled }}
		consul_register {
			name {{ .Values.consul.register.name | default .Values.pool.name }}
			address {$POD_IP}
			port {{ .Values.ports.http }}
			check_url http://{$POD_IP}:{{ .Values.ports.health }}{{ .Values.probes.healthPath }}
{{- with .Values.consul.register.tags }}
			tags {{ join " " . }}
{{- end }}
		}
{{- end }}
	}
}

# Probes and metrics; not in the Service.
:{{ .Values.ports.health }} {
	handle {{ .Values.probes.healthPath }} {
		worker_pool_health {{ .Values.pool.name }} {
			min_healthy {{ .Values.probes.minHealthy }}
		}
	}
	handle /metrics {
		metrics
	}
	handle {
		respond 404
	}
}
{{ end -}}

{{- define "cw.securityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end -}}

{{- define "cw.otelEnv" -}}
{{- if .Values.otel.endpoint -}}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ .Values.otel.endpoint | quote }}
- name: OTEL_SERVICE_NAME
  value: {{ .Values.otel.serviceName | quote }}
{{- end -}}
{{- end -}}

{{- define "cw.healthProbe" -}}
httpGet:
  path: {{ .path }}
  port: {{ .port }}
{{- with .initialDelaySeconds }}
initialDelaySeconds: {{ . }}
{{- end }}
periodSeconds: {{ .periodSeconds }}
failureThreshold: {{ .failureThreshold }}
{{- end -}}

{{/* Caddy's container; root: the chart's context, sidecar: a native sidecar. */}}
{{- define "cw.caddyContainer" -}}
{{- $v := .root.Values -}}
{{- $consul := or (eq $v.mode "consul") $v.consul.register.enabled -}}
- name: caddy
  image: {{ include "cw.caddyImage" .root }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
{{- if .sidecar }}
  # A native sidecar (Kubernetes 1.29+): started before the app and
  # stopped after it, so no request finds Caddy gone while workers drain.
  restartPolicy: Always
{{- end }}
  command: ["/usr/bin/caddy"]
  args: ["run", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile"]
  env:
{{- if and (eq $v.mode "spawn") (lt (int $v.workers) 1) }}
    # The pool's count: one worker per CPU of the limit, rounded up.
    - name: WORKERS
      valueFrom:
        resourceFieldRef:
          containerName: caddy
          resource: limits.cpu
          divisor: "1"
{{- end }}
    - name: XDG_DATA_HOME
      value: /data
    - name: XDG_CONFIG_HOME
      value: /config
{{- if $v.consul.register.enabled }}
    - name: POD_IP
      valueFrom:
        fieldRef:
          fieldPath: status.podIP
{{- end }}
{{- if $consul }}
    - name: HOST_IP
      valueFrom:
        fieldRef:
          fieldPath: status.hostIP
    - name: CONSUL_HTTP_ADDR
      value: {{ $v.consul.address | default "$(HOST_IP):8500" | quote }}
{{- if $v.consul.tokenSecret }}
    - name: CONSUL_HTTP_TOKEN_FILE
      value: /var/run/secrets/consul/token
{{- end }}
{{- end }}
{{- if eq $v.mode "spawn" }}
{{- range $k, $val := $v.app.env }}
    - name: {{ $k }}
      value: {{ $val | quote }}
{{- end }}
{{- end }}
{{- with include "cw.otelEnv" .root }}{{ . | nindent 4 }}{{ end }}
  ports:
    - name: http
      containerPort: {{ $v.ports.http }}
      protocol: TCP
    - name: health
      containerPort: {{ $v.ports.health }}
      protocol: TCP
  # Ready while at least probes.minHealthy workers are in rotation.
{{- if .sidecar }}
  # No startupProbe: the kubelet would wait for it before it starts the
  # app, whose workers the check needs.
{{- end }}
  readinessProbe:
    {{- include "cw.healthProbe" (merge (dict "path" $v.probes.healthPath "port" "health") $v.probes.readiness) | nindent 4 }}
{{- if and (eq $v.mode "spawn") $v.probes.liveness.enabled }}
  # Restarted, and its workers with it, when no worker was in rotation
  # for a while.
  livenessProbe:
    {{- include "cw.healthProbe" (merge (dict "path" $v.probes.healthPath "port" "health") (omit $v.probes.liveness "enabled")) | nindent 4 }}
{{- end }}
{{- if not .sidecar }}
  lifecycle:
    # Wait until the pod has left the Service's endpoints before Caddy
    # gets SIGTERM and drains; the sleep action needs no shell in the
    # image (Kubernetes 1.30+).
    preStop:
      sleep:
        seconds: {{ $v.preStopSleepSeconds }}
{{- end }}
  resources:
    {{- toYaml (ternary $v.app.resources $v.resources (eq $v.mode "spawn")) | nindent 4 }}
  securityContext:
    {{- include "cw.securityContext" .root | nindent 4 }}
  volumeMounts:
    - name: caddyfile
      mountPath: /etc/caddy
      readOnly: true
    - name: caddy-data
      mountPath: /data
    - name: caddy-config
      mountPath: /config
    - name: tmp
      mountPath: /tmp
{{- if and $consul $v.consul.tokenSecret }}
    - name: consul-token
      mountPath: /var/run/secrets/consul
      readOnly: true
{{- end }}
{{- end -}}
