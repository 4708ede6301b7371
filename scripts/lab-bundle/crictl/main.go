// kprov-crictl: a small crictl stand-in for the kprov LAB bundle (cri-tools is not packaged in Debian).
//
// It is NOT cri-tools. It speaks the real CRI (v1alpha2 gRPC, the client kubelet itself uses) to the runtime and
// implements the crictl subset kubeadm 1.20 calls, plus a few read-only helpers:
//
//	crictl [-r|--runtime-endpoint EP] [-i|--image-endpoint EP] [-t|--timeout D] COMMAND [ARGS]
//	info | version | pods [-q] | stopp ID... | rmp ID... | inspecti IMAGE... | pull IMAGE... | images [-q] | ps [-a] [-q]
//
// Built inside the Kubernetes 1.20.2 source tree (vendored grpc + cri-api) by scripts/lab-bundle/build-crictl.sh.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io/ioutil"
	"os"
	"strings"
	"time"

	internalapi "k8s.io/cri-api/pkg/apis"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1alpha2"
	"k8s.io/klog/v2"
	"k8s.io/kubernetes/pkg/kubelet/cri/remote"
)

const version = "kprov-crictl 1.20.2-lab (CRI v1alpha2 subset; not cri-tools)"

func usage() {
	fmt.Fprintln(os.Stderr, "usage: crictl [-r EP] [-i EP] [-t TIMEOUT] info|version|pods [-q]|stopp ID...|rmp ID...|"+
		"inspecti IMAGE...|pull IMAGE...|images [-q]|ps [-a] [-q]")
	os.Exit(2)
}

func die(format string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, "crictl: "+format+"\n", a...)
	os.Exit(1)
}

func endpointFromEnv(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func normalize(ep string) string {
	if strings.HasPrefix(ep, "/") {
		return "unix://" + ep
	}
	return ep
}

func printJSON(v interface{}) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		die("%v", err)
	}
	fmt.Println(string(b))
}

func quietKlog() {
	// the CRI client logs every failure through klog; our own one-line errors say the same
	fs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(fs)
	_ = fs.Set("logtostderr", "false")
	_ = fs.Set("alsologtostderr", "false")
	_ = fs.Set("stderrthreshold", "FATAL")
	klog.SetOutput(ioutil.Discard)
}

func main() {
	quietKlog()
	runtimeEP := endpointFromEnv("CONTAINER_RUNTIME_ENDPOINT", "unix:///run/containerd/containerd.sock")
	imageEP := os.Getenv("IMAGE_SERVICE_ENDPOINT")
	timeout := 10 * time.Second
	args := os.Args[1:]
	for len(args) > 0 && strings.HasPrefix(args[0], "-") {
		opt, val, hasVal := args[0], "", false
		if i := strings.Index(opt, "="); i > 0 {
			opt, val, hasVal = opt[:i], opt[i+1:], true
		}
		take := func() string {
			if hasVal {
				return val
			}
			if len(args) < 2 {
				usage()
			}
			args = args[1:]
			return args[0]
		}
		switch opt {
		case "-r", "--runtime-endpoint":
			runtimeEP = take()
		case "-i", "--image-endpoint":
			imageEP = take()
		case "-t", "--timeout":
			d, err := time.ParseDuration(take())
			if err != nil {
				die("bad timeout: %v", err)
			}
			timeout = d
		case "--version", "-v":
			fmt.Println(version)
			return
		case "-h", "--help":
			usage()
		default:
			die("unsupported option %s (this is a lab stand-in for crictl)", opt)
		}
		args = args[1:]
	}
	if len(args) == 0 {
		usage()
	}
	if imageEP == "" {
		imageEP = runtimeEP
	}
	cmd, rest := args[0], args[1:]
	quiet, all := false, false
	var ids []string
	for _, a := range rest {
		switch a {
		case "-q", "--quiet":
			quiet = true
		case "-a", "--all":
			all = true
		default:
			ids = append(ids, a)
		}
	}
	rs := func() internalapi.RuntimeService {
		s, err := remote.NewRemoteRuntimeService(normalize(runtimeEP), timeout)
		if err != nil {
			die("connect %s: %v", runtimeEP, err)
		}
		return s
	}
	is := func() internalapi.ImageManagerService {
		s, err := remote.NewRemoteImageService(normalize(imageEP), timeout)
		if err != nil {
			die("connect %s: %v", imageEP, err)
		}
		return s
	}
	switch cmd {
	case "version":
		v, err := rs().Version("v1alpha2")
		if err != nil {
			die("%v", err)
		}
		fmt.Printf("Version:  0.1.0\nRuntimeName:  %s\nRuntimeVersion:  %s\nRuntimeApiVersion:  %s\n",
			v.RuntimeName, v.RuntimeVersion, v.RuntimeApiVersion)
	case "info":
		st, err := rs().Status()
		if err != nil {
			die("%v", err)
		}
		printJSON(map[string]interface{}{"status": st})
	case "pods":
		pods, err := rs().ListPodSandbox(nil)
		if err != nil {
			die("%v", err)
		}
		for _, p := range pods {
			if quiet {
				fmt.Println(p.Id)
			} else {
				fmt.Printf("%s\t%s\t%s\t%s\n", p.Id, p.State, p.Metadata.GetName(), p.Metadata.GetNamespace())
			}
		}
	case "stopp", "rmp":
		if len(ids) == 0 {
			die("%s: no pod sandbox ID given", cmd)
		}
		s := rs()
		for _, id := range ids {
			var err error
			if cmd == "stopp" {
				err = s.StopPodSandbox(id)
			} else {
				err = s.RemovePodSandbox(id)
			}
			if err != nil {
				die("%s %s: %v", cmd, id, err)
			}
			fmt.Println(id)
		}
	case "ps":
		filter := &runtimeapi.ContainerFilter{}
		if !all {
			filter.State = &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_RUNNING}
		}
		cs, err := rs().ListContainers(filter)
		if err != nil {
			die("%v", err)
		}
		for _, c := range cs {
			if quiet {
				fmt.Println(c.Id)
			} else {
				fmt.Printf("%s\t%s\t%s\t%s\n", c.Id, c.Image.GetImage(), c.State, c.Metadata.GetName())
			}
		}
	case "inspecti":
		if len(ids) == 0 {
			die("inspecti: no image given")
		}
		s := is()
		for _, ref := range ids {
			img, err := s.ImageStatus(&runtimeapi.ImageSpec{Image: ref})
			if err != nil {
				die("inspecti %s: %v", ref, err)
			}
			if img == nil {
				die("no such image %q present", ref)
			}
			printJSON(map[string]interface{}{"status": img})
		}
	case "pull":
		if len(ids) == 0 {
			die("pull: no image given")
		}
		s := is()
		for _, ref := range ids {
			id, err := s.PullImage(&runtimeapi.ImageSpec{Image: ref}, nil, nil)
			if err != nil {
				die("pull %s: %v", ref, err)
			}
			fmt.Printf("Image is up to date for %s\n", id)
		}
	case "images":
		imgs, err := is().ListImages(nil)
		if err != nil {
			die("%v", err)
		}
		for _, img := range imgs {
			if quiet {
				fmt.Println(img.Id)
				continue
			}
			for _, t := range img.RepoTags {
				fmt.Printf("%s\t%s\t%d\n", t, img.Id, img.Size_)
			}
		}
	default:
		die("unsupported command %q (lab stand-in: info, version, pods, stopp, rmp, ps, inspecti, pull, images)", cmd)
	}
}
