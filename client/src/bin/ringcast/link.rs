//! What the user is told while the link to the server is silent.

/// Tells the user on stderr that the link went silent or came back.
pub fn report_link(event: Option<client::LinkEvent>, offset: u64) {
    match event {
        Some(client::LinkEvent::Down { silent }) => eprint!(
            "ringcast: nothing from the server for {:.0} s; the link may be down. Waiting \
             (the connection is given up after 30 s of silence)\r\n",
            silent.as_secs_f64()
        ),
        Some(client::LinkEvent::Up { after }) => eprint!(
            "ringcast: the server is heard again after {:.1} s; continuing at offset {offset}\r\n",
            after.as_secs_f64()
        ),
        None => {}
    }
}
