// kprov-dns: a small cluster-DNS stand-in for the kprov LAB bundle. It is NOT CoreDNS (which Debian does not
// package, so it cannot be built offline here). It runs unchanged under kubeadm 1.20's CoreDNS addon
// (Deployment args `-conf /etc/coredns/Corefile`, the kubeadm ConfigMap's Corefile, probes on :8080/health and
// :8181/ready, metrics port 9153) and answers what pods need from cluster DNS:
//
//	<svc>.<ns>.svc.<zone>               A/AAAA: the ClusterIP, or the ready endpoint IPs of a headless service
//	<hostname>.<svc>.<ns>.svc.<zone>    A/AAAA: a headless endpoint with a hostname
//	_<port>._<proto>.<svc>.<ns>.svc.<zone>  SRV
//	<a-b-c-d>.<ns>.pod.<zone>           A ("pods insecure")
//	reverse lookups (in-addr.arpa / ip6.arpa) of ClusterIPs and endpoint IPs
//	anything else: forwarded to the `forward` upstreams (/etc/resolv.conf), SERVFAIL when there are none
//
// From the Corefile it reads: the server port (.:53), the `kubernetes` zones and ttl, `forward`, `health`, `ready`
// and `prometheus` addresses; other plugins are accepted and ignored. Services and Endpoints come from the API
// server through client-go informers (in-cluster config, or -kubeconfig for tests).
//
// Built in the Kubernetes 1.20.2 source tree (vendored miekg/dns v1.1.4 + client-go) by build-dns.sh.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io/ioutil"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	listersv1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
)

const version = "kprov-dns 1.20.2-lab (cluster DNS stand-in; not CoreDNS)"

type config struct {
	listen     string   // ":53"
	zones      []string // "cluster.local.", "in-addr.arpa.", "ip6.arpa."
	ttl        uint32
	upstreams  []string // "10.0.0.2:53"
	health     string   // ":8080"
	ready      string   // ":8181"
	prometheus string   // ":9153"
}

// parseCorefile reads the subset of the Corefile syntax kubeadm writes.
func parseCorefile(path string) (*config, error) {
	data, err := ioutil.ReadFile(path)
	if err != nil {
		return nil, err
	}
	c := &config{listen: ":53", ttl: 30}
	var stack []string
	for _, raw := range strings.Split(string(data), "\n") {
		line := strings.TrimSpace(raw)
		if i := strings.Index(line, "#"); i >= 0 {
			line = strings.TrimSpace(line[:i])
		}
		if line == "" {
			continue
		}
		if line == "}" {
			if len(stack) > 0 {
				stack = stack[:len(stack)-1]
			}
			continue
		}
		opens := strings.HasSuffix(line, "{")
		f := strings.Fields(strings.TrimSuffix(line, "{"))
		if len(f) == 0 {
			continue
		}
		parent := ""
		if len(stack) > 0 {
			parent = stack[len(stack)-1]
		}
		switch {
		case len(stack) == 0: // server block key, e.g. ".:53"
			if i := strings.LastIndex(f[0], ":"); i >= 0 {
				c.listen = ":" + f[0][i+1:]
			}
		case parent == "kubernetes" && f[0] == "ttl" && len(f) > 1:
			if n, err := strconv.Atoi(f[1]); err == nil {
				c.ttl = uint32(n)
			}
		case len(stack) == 1 && f[0] == "kubernetes":
			for _, z := range f[1:] {
				c.zones = append(c.zones, dns.Fqdn(strings.ToLower(z)))
			}
		case len(stack) == 1 && f[0] == "forward" && len(f) > 2:
			for _, to := range f[2:] {
				c.upstreams = append(c.upstreams, resolveUpstream(to)...)
			}
		case len(stack) == 1 && f[0] == "health":
			c.health = ":8080"
			if len(f) > 1 {
				c.health = f[1]
			}
		case len(stack) == 1 && f[0] == "ready":
			c.ready = ":8181"
			if len(f) > 1 {
				c.ready = f[1]
			}
		case len(stack) == 1 && f[0] == "prometheus":
			c.prometheus = ":9153"
			if len(f) > 1 {
				c.prometheus = f[1]
			}
		}
		if opens {
			stack = append(stack, f[0])
		}
	}
	if len(c.zones) == 0 {
		return nil, fmt.Errorf("%s: no `kubernetes ZONE...` line", path)
	}
	return c, nil
}

func resolveUpstream(to string) []string {
	if strings.HasPrefix(to, "/") { // a resolv.conf
		f, err := os.Open(to)
		if err != nil {
			log.Printf("forward: %v", err)
			return nil
		}
		defer f.Close()
		var out []string
		s := bufio.NewScanner(f)
		for s.Scan() {
			fs := strings.Fields(s.Text())
			if len(fs) >= 2 && fs[0] == "nameserver" {
				out = append(out, net.JoinHostPort(fs[1], "53"))
			}
		}
		return out
	}
	to = strings.TrimPrefix(to, "dns://")
	if _, _, err := net.SplitHostPort(to); err != nil {
		to = net.JoinHostPort(to, "53")
	}
	return []string{to}
}

type server struct {
	cfg       *config
	services  listersv1.ServiceLister
	endpoints listersv1.EndpointsLister
	synced    atomic.Value // bool
	queries   uint64
}

func (s *server) zoneOf(name string) string {
	best := ""
	for _, z := range s.cfg.zones {
		if dns.IsSubDomain(z, name) && len(z) > len(best) {
			best = z
		}
	}
	return best
}

func ipRR(name string, ip net.IP, qtype uint16, ttl uint32) dns.RR {
	hdr := dns.RR_Header{Name: name, Class: dns.ClassINET, Ttl: ttl}
	if v4 := ip.To4(); v4 != nil {
		if qtype != dns.TypeA && qtype != dns.TypeANY {
			return nil
		}
		hdr.Rrtype = dns.TypeA
		return &dns.A{Hdr: hdr, A: v4}
	}
	if qtype != dns.TypeAAAA && qtype != dns.TypeANY {
		return nil
	}
	hdr.Rrtype = dns.TypeAAAA
	return &dns.AAAA{Hdr: hdr, AAAA: ip}
}

// readyAddresses of a service's Endpoints.
func (s *server) readyAddresses(ns, svc string) []v1.EndpointAddress {
	ep, err := s.endpoints.Endpoints(ns).Get(svc)
	if err != nil {
		return nil
	}
	var out []v1.EndpointAddress
	for _, sub := range ep.Subsets {
		out = append(out, sub.Addresses...)
	}
	return out
}

// answer a name inside a kubernetes zone: (records, name exists).
func (s *server) answer(q dns.Question, zone string) ([]dns.RR, bool) {
	name := strings.ToLower(q.Name)
	ttl := s.cfg.ttl
	if zone == "in-addr.arpa." || zone == "ip6.arpa." {
		return s.reverse(q, name)
	}
	rel := strings.TrimSuffix(strings.TrimSuffix(name, zone), ".")
	if rel == "" {
		return nil, true
	}
	l := strings.Split(rel, ".")
	n := len(l)
	switch {
	case n >= 1 && l[n-1] == "pod" && n == 3: // a-b-c-d.ns.pod
		ip := net.ParseIP(strings.ReplaceAll(l[0], "-", "."))
		if ip == nil {
			ip = net.ParseIP(strings.ReplaceAll(l[0], "-", ":"))
		}
		if ip == nil {
			return nil, false
		}
		if rr := ipRR(q.Name, ip, q.Qtype, ttl); rr != nil {
			return []dns.RR{rr}, true
		}
		return nil, true
	case n >= 1 && l[n-1] == "svc":
		if n == 2 { // ns.svc: exists if any service lives there
			svcs, _ := s.services.Services(l[0]).List(labels.Everything())
			return nil, len(svcs) > 0
		}
		if n < 3 {
			return nil, n == 1
		}
		ns, svcName := l[n-2], l[n-3]
		svc, err := s.services.Services(ns).Get(svcName)
		if err != nil {
			return nil, false
		}
		prefix := l[:n-3]
		switch {
		case len(prefix) == 0:
			return s.serviceRecords(q, svc), true
		case len(prefix) == 2 && strings.HasPrefix(prefix[0], "_") && strings.HasPrefix(prefix[1], "_"):
			return s.srvRecords(q, svc, strings.TrimPrefix(prefix[0], "_"), strings.TrimPrefix(prefix[1], "_"))
		case len(prefix) == 1: // hostname.svc.ns.svc of a headless service
			for _, a := range s.readyAddresses(ns, svcName) {
				if a.Hostname == prefix[0] || strings.ReplaceAll(a.IP, ".", "-") == prefix[0] {
					if rr := ipRR(q.Name, net.ParseIP(a.IP), q.Qtype, ttl); rr != nil {
						return []dns.RR{rr}, true
					}
					return nil, true
				}
			}
		}
		return nil, false
	}
	return nil, false
}

func (s *server) serviceRecords(q dns.Question, svc *v1.Service) []dns.RR {
	var out []dns.RR
	if svc.Spec.Type == v1.ServiceTypeExternalName {
		if q.Qtype == dns.TypeCNAME || q.Qtype == dns.TypeA || q.Qtype == dns.TypeAAAA || q.Qtype == dns.TypeANY {
			out = append(out, &dns.CNAME{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeCNAME, Class: dns.ClassINET,
				Ttl: s.cfg.ttl}, Target: dns.Fqdn(svc.Spec.ExternalName)})
		}
		return out
	}
	if svc.Spec.ClusterIP != "" && svc.Spec.ClusterIP != v1.ClusterIPNone {
		if rr := ipRR(q.Name, net.ParseIP(svc.Spec.ClusterIP), q.Qtype, s.cfg.ttl); rr != nil {
			out = append(out, rr)
		}
		return out
	}
	for _, a := range s.readyAddresses(svc.Namespace, svc.Name) {
		if rr := ipRR(q.Name, net.ParseIP(a.IP), q.Qtype, s.cfg.ttl); rr != nil {
			out = append(out, rr)
		}
	}
	return out
}

func (s *server) srvRecords(q dns.Question, svc *v1.Service, port, proto string) ([]dns.RR, bool) {
	var out []dns.RR
	zone := s.zoneOf(q.Name)
	target := fmt.Sprintf("%s.%s.svc.%s", svc.Name, svc.Namespace, zone)
	found := false
	for _, p := range svc.Spec.Ports {
		if strings.EqualFold(p.Name, port) && strings.EqualFold(string(p.Protocol), proto) {
			found = true
			if q.Qtype == dns.TypeSRV || q.Qtype == dns.TypeANY {
				out = append(out, &dns.SRV{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeSRV, Class: dns.ClassINET,
					Ttl: s.cfg.ttl}, Priority: 0, Weight: 100, Port: uint16(p.Port), Target: target})
			}
		}
	}
	return out, found
}

func (s *server) reverse(q dns.Question, name string) ([]dns.RR, bool) {
	ip := net.ParseIP(strings.TrimSuffix(reverseToIP(name), "."))
	if ip == nil {
		return nil, false
	}
	svcs, _ := s.services.List(labels.Everything())
	zone := ""
	for _, z := range s.cfg.zones {
		if !strings.HasSuffix(z, ".arpa.") {
			zone = z
			break
		}
	}
	for _, svc := range svcs {
		target := ""
		if net.ParseIP(svc.Spec.ClusterIP).Equal(ip) {
			target = fmt.Sprintf("%s.%s.svc.%s", svc.Name, svc.Namespace, zone)
		} else {
			for _, a := range s.readyAddresses(svc.Namespace, svc.Name) {
				if net.ParseIP(a.IP).Equal(ip) {
					host := a.Hostname
					if host == "" {
						host = strings.ReplaceAll(a.IP, ".", "-")
					}
					target = fmt.Sprintf("%s.%s.%s.svc.%s", host, svc.Name, svc.Namespace, zone)
				}
			}
		}
		if target != "" {
			if q.Qtype != dns.TypePTR && q.Qtype != dns.TypeANY {
				return nil, true
			}
			return []dns.RR{&dns.PTR{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypePTR, Class: dns.ClassINET,
				Ttl: s.cfg.ttl}, Ptr: target}}, true
		}
	}
	return nil, false
}

func reverseToIP(name string) string {
	if strings.HasSuffix(name, ".in-addr.arpa.") {
		p := strings.Split(strings.TrimSuffix(name, ".in-addr.arpa."), ".")
		for i, j := 0, len(p)-1; i < j; i, j = i+1, j-1 {
			p[i], p[j] = p[j], p[i]
		}
		return strings.Join(p, ".")
	}
	if strings.HasSuffix(name, ".ip6.arpa.") {
		p := strings.Split(strings.TrimSuffix(name, ".ip6.arpa."), ".")
		var b strings.Builder
		for i := len(p) - 1; i >= 0; i-- {
			b.WriteString(p[i])
			if i > 0 && (len(p)-i)%4 == 0 {
				b.WriteString(":")
			}
		}
		return b.String()
	}
	return ""
}

func (s *server) forward(w dns.ResponseWriter, r *dns.Msg) {
	for _, up := range s.cfg.upstreams {
		c := &dns.Client{Net: "udp", Timeout: 2 * time.Second}
		if _, isTCP := w.RemoteAddr().(*net.TCPAddr); isTCP {
			c.Net = "tcp"
		}
		resp, _, err := c.Exchange(r, up)
		if err == nil && resp.Truncated && c.Net == "udp" {
			c.Net = "tcp"
			resp, _, err = c.Exchange(r, up)
		}
		if err == nil {
			_ = w.WriteMsg(resp)
			return
		}
	}
	m := new(dns.Msg)
	m.SetRcode(r, dns.RcodeServerFailure)
	_ = w.WriteMsg(m)
}

func (s *server) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	atomic.AddUint64(&s.queries, 1)
	if len(r.Question) != 1 {
		m := new(dns.Msg)
		m.SetRcode(r, dns.RcodeFormatError)
		_ = w.WriteMsg(m)
		return
	}
	q := r.Question[0]
	zone := s.zoneOf(strings.ToLower(q.Name))
	if zone == "" {
		s.forward(w, r)
		return
	}
	rrs, exists := s.answer(q, zone)
	if !exists && (zone == "in-addr.arpa." || zone == "ip6.arpa.") {
		s.forward(w, r) // "fallthrough in-addr.arpa ip6.arpa"
		return
	}
	m := new(dns.Msg)
	m.SetReply(r)
	m.Authoritative = true
	m.Answer = rrs
	if !exists {
		m.Rcode = dns.RcodeNameError
	}
	if len(m.Answer) == 0 {
		m.Ns = []dns.RR{&dns.SOA{Hdr: dns.RR_Header{Name: zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: s.cfg.ttl},
			Ns: "ns.dns." + zone, Mbox: "hostmaster." + zone, Serial: uint32(time.Now().Unix()), Refresh: 7200,
			Retry: 1800, Expire: 86400, Minttl: s.cfg.ttl}}
	}
	_ = w.WriteMsg(m)
}

func serveHTTP(addr, path string, h http.HandlerFunc) {
	if addr == "" {
		return
	}
	mux := http.NewServeMux()
	mux.HandleFunc(path, h)
	go func() { log.Fatal(http.ListenAndServe(addr, mux)) }()
}

func main() {
	conf := flag.String("conf", "/etc/coredns/Corefile", "Corefile (the kubeadm CoreDNS ConfigMap)")
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig (default: in-cluster config)")
	dnsPort := flag.String("dns.port", "", "override the Corefile's DNS port (tests)")
	showVersion := flag.Bool("version", false, "print the version")
	flag.Parse()
	if *showVersion {
		fmt.Println(version)
		return
	}
	klog.SetOutput(os.Stderr)
	cfg, err := parseCorefile(*conf)
	if err != nil {
		log.Fatalf("kprov-dns: %v", err)
	}
	if *dnsPort != "" {
		cfg.listen = ":" + *dnsPort
	}
	var rc *rest.Config
	if *kubeconfig != "" {
		rc, err = clientcmd.BuildConfigFromFlags("", *kubeconfig)
	} else {
		rc, err = rest.InClusterConfig()
	}
	if err != nil {
		log.Fatalf("kprov-dns: kubernetes client config: %v", err)
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		log.Fatalf("kprov-dns: %v", err)
	}
	factory := informers.NewSharedInformerFactory(cs, 5*time.Minute)
	s := &server{cfg: cfg, services: factory.Core().V1().Services().Lister(),
		endpoints: factory.Core().V1().Endpoints().Lister()}
	s.synced.Store(false)
	stop := make(chan struct{})
	factory.Start(stop)
	go func() {
		ok := cache.WaitForCacheSync(stop, factory.Core().V1().Services().Informer().HasSynced,
			factory.Core().V1().Endpoints().Informer().HasSynced)
		s.synced.Store(ok)
		log.Printf("kprov-dns: informers synced=%v", ok)
	}()
	serveHTTP(cfg.health, "/health", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "OK") })
	serveHTTP(cfg.ready, "/ready", func(w http.ResponseWriter, _ *http.Request) {
		if s.synced.Load().(bool) {
			fmt.Fprintln(w, "OK")
			return
		}
		http.Error(w, "not synced yet", http.StatusServiceUnavailable)
	})
	serveHTTP(cfg.prometheus, "/metrics", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "# kprov-dns: CoreDNS stand-in\ncoredns_build_info{version=\"kprov-dns\"} 1\n"+
			"coredns_dns_requests_total %d\n", atomic.LoadUint64(&s.queries))
	})
	log.Printf("%s: zones %v, listen %s, upstreams %v", version, cfg.zones, cfg.listen, cfg.upstreams)
	for _, proto := range []string{"udp", "tcp"} {
		srv := &dns.Server{Addr: cfg.listen, Net: proto, Handler: s}
		go func(srv *dns.Server) { log.Fatal(srv.ListenAndServe()) }(srv)
	}
	select {}
}
