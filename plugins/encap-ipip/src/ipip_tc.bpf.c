// The eBPF IPIP datapath: a tc (clsact, direct-action) program pair on the node's uplink.
//
// egress:  an IPv4 packet whose destination lies in a remote node's block (ipip_blocks, an
//          LPM trie: block -> that node's address) gets an outer IPv4 header (protocol 4,
//          source = this node's address from ipip_self, destination = the remote node), room
//          made with bpf_skb_adjust_room(BPF_ADJ_ROOM_MAC, ENCAP_L3_IPV4) so GSO packets are
//          segmented as IP-in-IP; the outer checksum is computed here.
// ingress: an IPv4 packet of protocol 4 addressed to this node from a known node (ipip_peers)
//          loses its outer header; the inner packet goes on up the stack (forwarded to the pod).
// Everything else passes untouched. Maps are filled by the ipip plugin (cnf::ipip).
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>

#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#ifndef BPF_F_ADJ_ROOM_DECAP_L3_IPV4
#define BPF_F_ADJ_ROOM_DECAP_L3_IPV4 (1ULL << 7)
#endif

struct ipip_lpm_key {
  __u32 prefixlen;
  __u32 addr;  // network order
};

struct {
  __uint(type, BPF_MAP_TYPE_LPM_TRIE);
  __type(key, struct ipip_lpm_key);
  __type(value, __u32);  // the remote node's address, network order
  __uint(max_entries, 65536);
  __uint(map_flags, BPF_F_NO_PREALLOC);
} ipip_blocks SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __type(key, __u32);  // a remote node's address, network order
  __type(value, __u32);
  __uint(max_entries, 65536);
} ipip_peers SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __type(key, __u32);
  __type(value, __u32);  // this node's address, network order (0: pass everything)
  __uint(max_entries, 1);
} ipip_self SEC(".maps");

static __always_inline __u16 fold_csum(__u64 sum) {
  sum = (sum & 0xffff) + (sum >> 16);
  sum = (sum & 0xffff) + (sum >> 16);
  sum = (sum & 0xffff) + (sum >> 16);
  return (__u16)~sum;
}

SEC("tc")
int ipip_egress(struct __sk_buff* skb) {
  void* data = (void*)(long)skb->data;
  void* end = (void*)(long)skb->data_end;
  struct ethhdr* eth = data;
  if ((void*)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP)) return TC_ACT_OK;
  struct iphdr* inner = (void*)(eth + 1);
  if ((void*)(inner + 1) > end) return TC_ACT_OK;
  struct ipip_lpm_key k = {32, inner->daddr};
  __u32* remote = bpf_map_lookup_elem(&ipip_blocks, &k);
  if (!remote) return TC_ACT_OK;
  __u32 zero = 0;
  __u32* self = bpf_map_lookup_elem(&ipip_self, &zero);
  if (!self || !*self) return TC_ACT_OK;

  struct iphdr outer = {};
  outer.version = 4;
  outer.ihl = 5;
  outer.tos = inner->tos;
  outer.ttl = 64;
  outer.frag_off = inner->frag_off & bpf_htons(0x4000);  // DF as the inner packet has it
  outer.protocol = IPPROTO_IPIP;
  outer.saddr = *self;
  outer.daddr = *remote;
  __u32 len = skb->len - sizeof(struct ethhdr) + sizeof(struct iphdr);
  outer.tot_len = bpf_htons(len > 0xffff ? 0xffff : len);
  __u64 sum = 0;
  __u16* w = (__u16*)&outer;
#pragma unroll
  for (int i = 0; i < (int)(sizeof(outer) / 2); i++) sum += w[i];
  outer.check = fold_csum(sum);

  // FIXED_GSO: a GSO packet keeps its segment size. The pod's MTU already leaves the 20 bytes
  // (uplink - 20), so each segment plus the outer header fits the uplink; without the flag the
  // kernel shrinks every segment by 20 more bytes (1408 instead of 1428 bytes of TCP payload in
  // a 1500-byte frame), and the decap below would have to grow it back.
  if (bpf_skb_adjust_room(skb, sizeof(struct iphdr), BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 | BPF_F_ADJ_ROOM_FIXED_GSO))
    return TC_ACT_SHOT;
  if (bpf_skb_store_bytes(skb, sizeof(struct ethhdr), &outer, sizeof(outer), 0)) return TC_ACT_SHOT;
  return TC_ACT_OK;
}

SEC("tc")
int ipip_ingress(struct __sk_buff* skb) {
  void* data = (void*)(long)skb->data;
  void* end = (void*)(long)skb->data_end;
  struct ethhdr* eth = data;
  if ((void*)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP)) return TC_ACT_OK;
  struct iphdr* outer = (void*)(eth + 1);
  if ((void*)(outer + 1) > end || outer->protocol != IPPROTO_IPIP) return TC_ACT_OK;
  __u32 zero = 0;
  __u32* self = bpf_map_lookup_elem(&ipip_self, &zero);
  if (!self || !*self || outer->daddr != *self) return TC_ACT_OK;
  if (outer->ihl != 5 || (outer->frag_off & bpf_htons(0x3fff))) return TC_ACT_OK;  // options or fragments: the stack's
  if (!bpf_map_lookup_elem(&ipip_peers, &outer->saddr)) return TC_ACT_SHOT;        // IPIP only from known nodes
  // FIXED_GSO: removing the outer header leaves each segment's payload as it was (a GRO'd
  // IPIP packet from the NIC, or a GSO one from a veth). Without it the kernel grows the segment
  // size by 20, and a full-size segment (1500 on the wire) no longer fits the pod's MTU of
  // uplink - 20 when it is forwarded (ip_forward's GSO length check: ICMP frag-needed).
  if (bpf_skb_adjust_room(skb, -(__s32)sizeof(struct iphdr), BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_DECAP_L3_IPV4 | BPF_F_ADJ_ROOM_FIXED_GSO) &&
      bpf_skb_adjust_room(skb, -(__s32)sizeof(struct iphdr), BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_FIXED_GSO))
    return TC_ACT_SHOT;
  return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";
