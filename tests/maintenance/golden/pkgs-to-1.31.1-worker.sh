cordon
drain
printf %s 'Types: deb
URIs: https://pkgs.example.invalid/core:/stable:/v1.31/deb/
Suites: /
Signed-By: /etc/apt/keyrings/kubernetes.gpg
' > /etc/apt/sources.list.d/kubernetes.sources
curl -fsSL --retry 3 --max-time 120 https://pkgs.example.invalid/core:/stable:/v1.31/deb/Release.key | gpg --batch --yes --dearmor -o /etc/apt/keyrings/kubernetes.gpg
apt-get update -q -o Acquire::Retries=3 -o Acquire::http::Timeout=60 -o Acquire::https::Timeout=60
apt-mark unhold kubeadm
DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o Acquire::Retries=3 -o Acquire::http::Timeout=60 -o Acquire::https::Timeout=60 --allow-change-held-packages 'kubeadm=1.31.1-*'
apt-mark hold kubeadm
kubeadm upgrade node
apt-mark unhold kubelet kubectl
DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o Acquire::Retries=3 -o Acquire::http::Timeout=60 -o Acquire::https::Timeout=60 --allow-change-held-packages 'kubelet=1.31.1-*' 'kubectl=1.31.1-*'
apt-mark hold kubelet kubectl
systemctl daemon-reload
systemctl restart kubelet
wait Ready at v1.31.1
uncordon
