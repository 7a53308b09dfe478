// A container runtime's CNI part, for cni/tests/chain.rs: drives a network configuration
// list through libcni (Debian's golang-github-containernetworking-cni-dev) exactly as
// containerd or CRI-O do. Built at test time in GOPATH mode, offline.
//
//	driver ACTION CONFLIST CNI_PATH CACHE_DIR CONTAINER_ID NETNS IFNAME CAPABILITY_ARGS [VALID_ATTACHMENTS]
//
// ACTION: add (prints the result), check, del, cached (prints the cached result), gc.
// libcni 1.1 has no GC (libcni 1.2 added it): gc sends each plugin of the list whose
// VERSION names 1.1.0 what libcni 1.2's GCNetworkList sends (its config with the list's
// name, cniVersion 1.1.0 and cni.dev/valid-attachments; CNI_COMMAND=GC). VALID_ATTACHMENTS
// is a JSON array of {"containerID", "ifname"}, or "-" to leave the key out.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
)

func fail(format string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, "libcni driver: "+format+"\n", a...)
	os.Exit(1)
}

func main() {
	if len(os.Args) < 9 {
		fail("usage: driver ACTION CONFLIST CNI_PATH CACHE_DIR CONTAINER_ID NETNS IFNAME CAPABILITY_ARGS [VALID_ATTACHMENTS]")
	}
	action, conflist, cniPath, cacheDir := os.Args[1], os.Args[2], os.Args[3], os.Args[4]
	id, netns, ifname, capsJSON := os.Args[5], os.Args[6], os.Args[7], os.Args[8]
	bytes, err := os.ReadFile(conflist)
	if err != nil {
		fail("reading %s: %v", conflist, err)
	}
	list, err := libcni.ConfListFromBytes(bytes)
	if err != nil {
		fail("parsing %s: %v", conflist, err)
	}
	caps := map[string]interface{}{}
	if err := json.Unmarshal([]byte(capsJSON), &caps); err != nil {
		fail("CAPABILITY_ARGS: %v", err)
	}
	paths := filepath.SplitList(cniPath)
	cni := libcni.NewCNIConfigWithCacheDir(paths, cacheDir, nil)
	rt := &libcni.RuntimeConf{
		ContainerID:    id,
		NetNS:          netns,
		IfName:         ifname,
		Args:           [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", id}},
		CapabilityArgs: caps,
	}
	ctx := context.Background()
	switch action {
	case "add":
		res, err := cni.AddNetworkList(ctx, list, rt)
		if err != nil {
			fail("ADD: %v", err)
		}
		if err := res.Print(); err != nil {
			fail("printing the result: %v", err)
		}
	case "cached":
		res, err := cni.GetNetworkListCachedResult(list, rt)
		if err != nil || res == nil {
			fail("no cached result: %v", err)
		}
		if err := res.Print(); err != nil {
			fail("printing the result: %v", err)
		}
	case "check":
		if err := cni.CheckNetworkList(ctx, list, rt); err != nil {
			fail("CHECK: %v", err)
		}
	case "del":
		if err := cni.DelNetworkList(ctx, list, rt); err != nil {
			fail("DEL: %v", err)
		}
	case "gc":
		gc(ctx, list, paths)
	default:
		fail("unknown ACTION %q", action)
	}
}

func gc(ctx context.Context, list *libcni.NetworkConfigList, paths []string) {
	inject := map[string]interface{}{"name": list.Name, "cniVersion": "1.1.0"}
	if len(os.Args) > 9 && os.Args[9] != "-" {
		var valid []map[string]string
		if err := json.Unmarshal([]byte(os.Args[9]), &valid); err != nil {
			fail("VALID_ATTACHMENTS: %v", err)
		}
		inject["cni.dev/valid-attachments"] = valid
	}
	for _, plugin := range list.Plugins {
		path, err := invoke.FindInPath(plugin.Network.Type, paths)
		if err != nil {
			fail("GC: %v", err)
		}
		info, err := invoke.GetVersionInfo(ctx, path, nil)
		if err != nil {
			fail("GC: VERSION of %s: %v", plugin.Network.Type, err)
		}
		speaks := false
		for _, v := range info.SupportedVersions() {
			speaks = speaks || v == "1.1.0"
		}
		if !speaks {
			continue
		}
		conf, err := libcni.InjectConf(plugin, inject)
		if err != nil {
			fail("GC: config of %s: %v", plugin.Network.Type, err)
		}
		args := &invoke.Args{Command: "GC", Path: joinList(paths)}
		if err := invoke.ExecPluginWithoutResult(ctx, path, conf.Bytes, args, nil); err != nil {
			fail("GC %s: %v", plugin.Network.Type, err)
		}
	}
}

func joinList(paths []string) string {
	out := ""
	for i, p := range paths {
		if i > 0 {
			out += string(os.PathListSeparator)
		}
		out += p
	}
	return out
}
