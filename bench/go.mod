module github.com/caddy-workerpool/caddy-workerpool/bench

go 1.26
