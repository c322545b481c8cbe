import NIOCore

/// A peer as the audit trail records it: `ip:port`, or `[ip]:port` for IPv6. Every listener uses it.
public func peerDescription(_ address: SocketAddress) -> String {
    if let ip = address.ipAddress, let port = address.port {
        return address.protocol == .inet6 ? "[\(ip)]:\(port)" : "\(ip):\(port)"
    }
    return address.description
}
