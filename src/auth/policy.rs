//! Which role each request needs: a plain function of the method and path, with table tests.
//! Routes the node does not know (the program's own) need `read` to GET and `write` for
//! anything else; an operator's routes need `admin`.

use axum::http::Method;

use super::Role;

/// What a request to the HTTP API needs; `None`: open to anyone.
pub fn http_role(method: &Method, path: &str, metrics_auth: bool) -> Option<Role> {
    let reading = *method == Method::GET || *method == Method::HEAD;
    match path {
        "/healthz" | "/readyz" | "/metrics" => metrics_auth.then_some(Role::Read),
        "/v1/status" => Some(Role::Read),
        p if p.starts_with("/v1/groups/")
            || p.starts_with("/v1/admin/")
            || p.starts_with("/v1/debug/") =>
        {
            Some(Role::Admin)
        }
        _ if reading => Some(Role::Read),
        _ => Some(Role::Write),
    }
}

/// The node-to-node service: its callers are peers, who prove who they are with their
/// certificates, never with tokens.
pub const RAFT_SERVICE_PREFIX: &str = "/raftnode.v1.RaftService/";

/// What a gRPC call needs, by its path; `None` for the node-to-node service.
pub fn grpc_role(path: &str) -> Option<Role> {
    if path.starts_with(RAFT_SERVICE_PREFIX) {
        return None;
    }
    match path {
        "/raftnode.v1.KvService/Get" => Some(Role::Read),
        _ => Some(Role::Write),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_routes_need_their_roles() {
        let cases = [
            (Method::GET, "/healthz", false, None),
            (Method::GET, "/metrics", false, None),
            (Method::GET, "/metrics", true, Some(Role::Read)),
            (Method::GET, "/readyz", true, Some(Role::Read)),
            (Method::GET, "/v1/status", false, Some(Role::Read)),
            (Method::GET, "/v1/kv/1/k", false, Some(Role::Read)),
            (Method::PUT, "/v1/kv/1/k", false, Some(Role::Write)),
            (Method::DELETE, "/v1/kv/1/k", false, Some(Role::Write)),
            (Method::PUT, "/v1/groups/7", false, Some(Role::Admin)),
            (Method::DELETE, "/v1/groups/7", false, Some(Role::Admin)),
            (
                Method::POST,
                "/v1/groups/1/voters",
                false,
                Some(Role::Admin),
            ),
            (
                Method::POST,
                "/v1/groups/1/transfer-leader",
                false,
                Some(Role::Admin),
            ),
            (
                Method::POST,
                "/v1/admin/rpc-server/restart",
                false,
                Some(Role::Admin),
            ),
            (Method::POST, "/v1/debug/leaks", false, Some(Role::Admin)),
            (Method::GET, "/app/thing", false, Some(Role::Read)),
            (Method::POST, "/app/thing", false, Some(Role::Write)),
        ];
        for (method, path, metrics_auth, want) in cases {
            assert_eq!(
                http_role(&method, path, metrics_auth),
                want,
                "{method} {path} (metrics_auth {metrics_auth})"
            );
        }
    }

    #[test]
    fn grpc_calls_need_their_roles() {
        assert_eq!(grpc_role("/raftnode.v1.KvService/Get"), Some(Role::Read));
        assert_eq!(grpc_role("/raftnode.v1.KvService/Put"), Some(Role::Write));
        assert_eq!(
            grpc_role("/raftnode.v1.KvService/Delete"),
            Some(Role::Write)
        );
        assert_eq!(grpc_role("/some.App/Anything"), Some(Role::Write));
        assert_eq!(grpc_role("/raftnode.v1.RaftService/Batch"), None);
    }
}
