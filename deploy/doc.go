// Package deploy holds no code: its tests check the deployment files
// beside them — deploy/build.sh and the Dockerfile, the kustomize base
// and overlays under kubernetes/, the Helm chart under helm/, and the
// xcaddy build. It is a Go module of its own so that the Helm, kustomize
// and Kubernetes libraries that the tests need never enter the plugin's
// go.mod, which every `xcaddy build --with` of the plugin pulls into a
// user's Caddy.
package deploy
