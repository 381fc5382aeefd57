use axum::http::{Request, StatusCode};
use base64::Engine;
use warren_core::Broker;

use super::*;

fn state() -> MgmtState {
    let b = Broker::new(None);
    b.put_user("admin", "pw", vec!["administrator".into()]);
    b.put_user("watcher", "pw", vec!["monitoring".into()]);
    b.put_user("plain", "pw", vec![]);
    MgmtState::new(b, Vec::new(), Vec::new())
}

fn parts(authorization: Option<&str>) -> Parts {
    let mut r = Request::builder();
    if let Some(a) = authorization {
        r = r.header(header::AUTHORIZATION, a);
    }
    r.body(()).expect("request").into_parts().0
}

fn basic(user: &str, pass: &str) -> String {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    format!("Basic {token}")
}

async fn status<R: Role>(s: &MgmtState, authorization: Option<&str>) -> Option<StatusCode> {
    Authed::<R>::from_request_parts(&mut parts(authorization), s)
        .await
        .err()
        .map(|e| e.status())
}

#[tokio::test]
async fn missing_or_malformed_credentials_are_401() {
    let s = state();
    let unauthorized = Some(StatusCode::UNAUTHORIZED);
    assert_eq!(status::<Read>(&s, None).await, unauthorized);
    assert_eq!(status::<Read>(&s, Some("Bearer x")).await, unauthorized);
    assert_eq!(status::<Read>(&s, Some("Basic !!!")).await, unauthorized);
    let no_colon = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("admin")
    );
    assert_eq!(status::<Read>(&s, Some(&no_colon)).await, unauthorized);
    assert_eq!(
        status::<Read>(&s, Some(&basic("admin", "wrong"))).await,
        unauthorized
    );
    assert_eq!(
        status::<Read>(&s, Some(&basic("nobody", "pw"))).await,
        unauthorized
    );
}

#[tokio::test]
async fn tags_decide_the_role() {
    let s = state();
    let forbidden = Some(StatusCode::FORBIDDEN);
    assert_eq!(
        status::<Read>(&s, Some(&basic("plain", "pw"))).await,
        forbidden
    );
    assert_eq!(
        status::<Read>(&s, Some(&basic("watcher", "pw"))).await,
        None
    );
    assert_eq!(
        status::<Write>(&s, Some(&basic("watcher", "pw"))).await,
        forbidden
    );
    assert_eq!(status::<Admin>(&s, Some(&basic("admin", "pw"))).await, None);
    let admin = basic("admin", "pw");
    let Ok(a) = Authed::<Admin>::from_request_parts(&mut parts(Some(&admin)), &s).await else {
        panic!("admin logs in");
    };
    assert!(a.admin);
    assert_eq!(a.name, "admin");
}

#[test]
fn the_401_reply_carries_the_challenge() {
    use axum::response::IntoResponse;
    let r = ApiError::unauthorized().into_response();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.headers()[header::WWW_AUTHENTICATE],
        "Basic realm=\"Warren Management\""
    );
}
