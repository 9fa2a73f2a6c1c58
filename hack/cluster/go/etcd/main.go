// Command etcd is etcd's own server main, built from the go.etcd.io/etcd/server/v3
// module: `go install` of etcd's main module fails on its replace directives, and
// Debian's etcd 3.4 is too old for kube-apiserver 1.35 (no RequestWatchProgress).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
