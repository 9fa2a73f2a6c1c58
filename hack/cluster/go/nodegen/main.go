// Command nodegen turns a Trainyard node profile (hack/cluster/profiles/*.yaml) into
// a v1 List of Node objects on stdout, ready for `kubectl apply -f -`.
//
// Why a program: a profile says "4 H100 nodes spread over 2 zones, 2 per rack";
// writing 16 (or 160) Node manifests by hand invites drift. It is written in Go so
// that hack/cluster/up.sh needs nothing beyond the Go toolchain it already uses,
// and it uses k8s.io/api's own types so a bad quantity fails here, loudly, rather
// than as a half-created cluster.
package main

import (
	"encoding/json"
	"fmt"
	"os"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// Profile is the file format: a list of node groups.
type Profile struct {
	Groups []Group `json:"groups"`
}

// Group is a set of identical nodes named <name>-<index>.
type Group struct {
	Name string `json:"name"`
	// Count is how many nodes the group has.
	Count int `json:"count"`
	// Zones are assigned round-robin (topology.kubernetes.io/zone).
	Zones []string `json:"zones"`
	// NodesPerRack groups consecutive nodes of one zone into racks
	// (trainyard.io/rack=<zone>-<group>-rack<k>); 0 means one rack per node.
	NodesPerRack int               `json:"nodesPerRack"`
	Labels       map[string]string `json:"labels"`
	Taints       []corev1.Taint    `json:"taints"`
	Capacity     map[string]string `json:"capacity"`
	// Allocatable defaults to Capacity.
	Allocatable map[string]string `json:"allocatable"`
}

const (
	rackLabel     = "trainyard.io/rack"
	zoneLabel     = "topology.kubernetes.io/zone"
	profileLabel  = "trainyard.io/node-profile"
	kwokNodeKey   = "kwok.x-k8s.io/node"
	kwokNodeValue = "fake"
)

func resources(group string, in map[string]string) (corev1.ResourceList, error) {
	out := corev1.ResourceList{}
	for name, value := range in {
		q, err := resource.ParseQuantity(value)
		if err != nil {
			return nil, fmt.Errorf("group %q: resource %q: %q is not a quantity: %w", group, name, value, err)
		}
		out[corev1.ResourceName(name)] = q
	}
	return out, nil
}

func nodes(profileName string, p Profile) ([]corev1.Node, error) {
	var out []corev1.Node
	seen := map[string]bool{}
	for _, g := range p.Groups {
		if g.Name == "" || g.Count <= 0 || len(g.Zones) == 0 {
			return nil, fmt.Errorf("group %q: name, count > 0 and zones are required", g.Name)
		}
		if seen[g.Name] {
			return nil, fmt.Errorf("group %q appears twice", g.Name)
		}
		seen[g.Name] = true
		capacity, err := resources(g.Name, g.Capacity)
		if err != nil {
			return nil, err
		}
		allocatable := capacity
		if len(g.Allocatable) > 0 {
			if allocatable, err = resources(g.Name, g.Allocatable); err != nil {
				return nil, err
			}
		}
		perRack := max(g.NodesPerRack, 1)
		for i := range g.Count {
			name := fmt.Sprintf("%s-%d", g.Name, i)
			zone := g.Zones[i%len(g.Zones)]
			labels := map[string]string{
				"kubernetes.io/hostname":  name,
				"kubernetes.io/os":        "linux",
				"kubernetes.io/arch":      "amd64",
				"type":                    "kwok",
				zoneLabel:                 zone,
				rackLabel:                 fmt.Sprintf("%s-%s-rack%d", zone, g.Name, (i/len(g.Zones))/perRack),
				profileLabel:              profileName,
				"trainyard.io/node-group": g.Name,
			}
			for k, v := range g.Labels {
				labels[k] = v
			}
			out = append(out, corev1.Node{
				TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Node"},
				ObjectMeta: metav1.ObjectMeta{
					Name:        name,
					Labels:      labels,
					Annotations: map[string]string{kwokNodeKey: kwokNodeValue},
				},
				Spec: corev1.NodeSpec{Taints: g.Taints},
				Status: corev1.NodeStatus{
					Capacity:    capacity.DeepCopy(),
					Allocatable: allocatable.DeepCopy(),
					Phase:       corev1.NodeRunning,
				},
			})
		}
	}
	return out, nil
}

func run(args []string) error {
	if len(args) != 2 {
		return fmt.Errorf("usage: nodegen PROFILE_NAME PROFILE.yaml")
	}
	data, err := os.ReadFile(args[1])
	if err != nil {
		return err
	}
	var p Profile
	if err := yaml.UnmarshalStrict(data, &p); err != nil {
		return fmt.Errorf("%s: %w", args[1], err)
	}
	list, err := nodes(args[0], p)
	if err != nil {
		return fmt.Errorf("%s: %w", args[1], err)
	}
	items := make([]any, len(list))
	for i := range list {
		items[i] = list[i]
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(map[string]any{"apiVersion": "v1", "kind": "List", "items": items})
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "nodegen:", err)
		os.Exit(1)
	}
}
