//! Just enough of the D-Bus wire protocol to make a method call to systemd over its
//! private socket (`/run/systemd/private`): SASL `EXTERNAL` authentication, one method
//! call at a time, its reply or error. A peer-to-peer connection needs no bus daemon
//! and no `Hello`, so a call costs two round trips on a socket root alone can open.
//!
//! Why not a crate: zbus brings an async executor and dozens of crates into a hook that
//! must stay single-threaded; the `dbus` crate links libdbus. The subset here is the
//! marshalling of strings, booleans, arrays, structs and variants (docs/dependencies.md).
//!
//! Every read and write has a deadline: a systemd that does not answer costs a start
//! that deadline and a warning, never a hang.

use std::io::{self, Read, Write};
use std::os::fd::FromRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connect to {path}: {source}")]
    Connect { path: String, source: io::Error },
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: io::Error,
    },
    #[error("authentication refused: {0:?}")]
    Auth(String),
    #[error("malformed message from the peer: {0}")]
    Malformed(&'static str),
    /// The peer answered with a D-Bus error (`name`, e.g.
    /// `org.freedesktop.systemd1.NoSuchUnit`, and its message).
    #[error("{name}: {message}")]
    Remote { name: String, message: String },
}

pub type Result<T> = std::result::Result<T, Error>;

/// A value in a message body, as far as nvhook sends them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Str(String),
    Bool(bool),
    /// An array: its element signature and elements.
    Array(&'static str, Vec<Value>),
    Struct(Vec<Value>),
    /// A variant: the contained value's signature and the value.
    Variant(&'static str, Box<Value>),
}

/// Message bytes, aligned from the start of the message (the body starts 8-aligned, so
/// a body marshalled on its own aligns the same).
#[derive(Default)]
struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    fn pad(&mut self, align: usize) {
        while self.buf.len() % align != 0 {
            self.buf.push(0);
        }
    }
    fn u32(&mut self, v: u32) {
        self.pad(4);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    fn str(&mut self, s: &str) {
        self.u32(s.len() as u32);
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.push(0);
    }
    fn sig(&mut self, s: &str) {
        self.buf.push(s.len() as u8);
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.push(0);
    }
    /// Starts an array whose elements align to `align`: gives where its length goes
    /// and where its elements start (the padding after the length is not counted).
    fn array_start(&mut self, align: usize) -> (usize, usize) {
        self.u32(0);
        let len_at = self.buf.len() - 4;
        self.pad(align);
        (len_at, self.buf.len())
    }
    fn array_end(&mut self, (len_at, start): (usize, usize)) {
        let len = (self.buf.len() - start) as u32;
        self.buf[len_at..len_at + 4].copy_from_slice(&len.to_le_bytes());
    }
    fn value(&mut self, v: &Value) {
        match v {
            Value::Str(s) => self.str(s),
            Value::Bool(b) => self.u32(u32::from(*b)),
            Value::Array(elem, items) => {
                let a = self.array_start(alignment(elem));
                for i in items {
                    self.value(i);
                }
                self.array_end(a);
            }
            Value::Struct(fields) => {
                self.pad(8);
                for f in fields {
                    self.value(f);
                }
            }
            Value::Variant(sig, inner) => {
                self.sig(sig);
                self.value(inner);
            }
        }
    }
}

/// The alignment of the first type in a signature.
fn alignment(sig: &str) -> usize {
    match sig.as_bytes().first() {
        Some(b'(' | b'{' | b'x' | b't' | b'd') => 8,
        Some(b'y' | b'g' | b'v') => 1,
        Some(b'n' | b'q') => 2,
        _ => 4,
    }
}

/// A method call to `path`'s `interface.member` with body `args` of `signature`.
pub struct Call<'a> {
    pub path: &'a str,
    pub interface: &'a str,
    pub member: &'a str,
    pub destination: Option<&'a str>,
    pub signature: &'a str,
    pub args: &'a [Value],
}

const METHOD_CALL: u8 = 1;
const METHOD_RETURN: u8 = 2;
const ERROR: u8 = 3;

impl Call<'_> {
    /// The message as sent, with `serial`.
    pub fn marshal(&self, serial: u32) -> Vec<u8> {
        let mut body = Writer::default();
        for a in self.args {
            body.value(a);
        }
        let mut w = Writer::default();
        w.buf.extend_from_slice(&[b'l', METHOD_CALL, 0, 1]);
        w.u32(body.buf.len() as u32);
        w.u32(serial);
        let fields = w.array_start(8);
        let field = |w: &mut Writer, code: u8, sig: &str, v: &str| {
            w.pad(8);
            w.buf.push(code);
            w.sig(sig);
            if sig == "g" {
                w.sig(v)
            } else {
                w.str(v)
            }
        };
        field(&mut w, 1, "o", self.path);
        field(&mut w, 2, "s", self.interface);
        field(&mut w, 3, "s", self.member);
        if let Some(d) = self.destination {
            field(&mut w, 6, "s", d);
        }
        if !self.signature.is_empty() {
            field(&mut w, 8, "g", self.signature);
        }
        w.array_end(fields);
        w.pad(8);
        w.buf.extend_from_slice(&body.buf);
        w.buf
    }
}

/// A message read back: its type, the serial it answers, an error's name, and its body.
#[derive(Debug, Default)]
pub struct Message {
    pub kind: u8,
    pub serial: u32,
    pub reply_serial: Option<u32>,
    pub error_name: Option<String>,
    pub signature: String,
    pub path: Option<String>,
    pub member: Option<String>,
    pub body: Vec<u8>,
    pub big_endian: bool,
}

/// Reads marshalled values, little- or big-endian as the message says.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    big: bool,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8], big_endian: bool) -> Reader<'a> {
        Reader {
            buf,
            pos: 0,
            big: big_endian,
        }
    }
    fn align(&mut self, a: usize) -> Result<()> {
        let p = self.pos.div_ceil(a) * a;
        if p > self.buf.len() {
            return Err(Error::Malformed("padding past the end"));
        }
        self.pos = p;
        Ok(())
    }
    fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or(Error::Malformed("value past the end"))?;
        let b = &self.buf[self.pos..end];
        self.pos = end;
        Ok(b)
    }
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.bytes(1)?[0])
    }
    pub fn u32(&mut self) -> Result<u32> {
        self.align(4)?;
        let b: [u8; 4] = self.bytes(4)?.try_into().expect("4");
        Ok(if self.big {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    }
    fn text(&mut self, len: usize) -> Result<String> {
        let b = self.bytes(len)?;
        if self.u8()? != 0 {
            return Err(Error::Malformed("string without its NUL"));
        }
        String::from_utf8(b.to_vec()).map_err(|_| Error::Malformed("string not UTF-8"))
    }
    pub fn str(&mut self) -> Result<String> {
        let n = self.u32()? as usize;
        self.text(n)
    }
    pub fn sig(&mut self) -> Result<String> {
        let n = self.u8()? as usize;
        self.text(n)
    }
    /// Where an array's elements end (the elements start aligned to `align`).
    pub fn array(&mut self, align: usize) -> Result<usize> {
        let n = self.u32()? as usize;
        self.align(align)?;
        self.pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or(Error::Malformed("array past the end"))
    }
    pub fn pos(&self) -> usize {
        self.pos
    }
    pub fn align_to(&mut self, a: usize) -> Result<()> {
        self.align(a)
    }
}

/// The longest message accepted from the peer.
const MAX_MESSAGE: usize = 1 << 20;

impl Message {
    /// Parses the 16-byte fixed header: the whole message's length.
    fn total_len(head: &[u8; 16]) -> Result<usize> {
        let big = match head[0] {
            b'l' => false,
            b'B' => true,
            _ => return Err(Error::Malformed("unknown byte order")),
        };
        let mut r = Reader::new(head, big);
        r.pos = 4;
        let body = r.u32()? as usize;
        r.pos = 12;
        let fields = r.u32()? as usize;
        let total = (16 + fields).div_ceil(8) * 8 + body;
        if total > MAX_MESSAGE {
            return Err(Error::Malformed("message too long"));
        }
        Ok(total)
    }

    pub fn parse(msg: &[u8]) -> Result<Message> {
        let head: &[u8; 16] = msg
            .get(..16)
            .and_then(|h| h.try_into().ok())
            .ok_or(Error::Malformed("short header"))?;
        if Message::total_len(head)? != msg.len() {
            return Err(Error::Malformed("length does not match the header"));
        }
        let big = head[0] == b'B';
        let mut m = Message {
            kind: head[1],
            big_endian: big,
            ..Message::default()
        };
        let mut r = Reader::new(msg, big);
        r.pos = 4;
        let body_len = r.u32()? as usize;
        m.serial = r.u32()?;
        let end = r.array(8)?;
        while r.pos < end {
            r.align(8)?;
            let code = r.u8()?;
            let sig = r.sig()?;
            match sig.as_str() {
                "s" | "o" => {
                    let v = r.str()?;
                    match code {
                        1 => m.path = Some(v),
                        3 => m.member = Some(v),
                        4 => m.error_name = Some(v),
                        _ => {}
                    }
                }
                "g" => {
                    let v = r.sig()?;
                    if code == 8 {
                        m.signature = v;
                    }
                }
                "u" => {
                    let v = r.u32()?;
                    if code == 5 {
                        m.reply_serial = Some(v);
                    }
                }
                _ => return Err(Error::Malformed("header field of an unknown type")),
            }
        }
        r.pos = end;
        r.align(8)?;
        m.body = msg
            .get(r.pos..r.pos + body_len)
            .ok_or(Error::Malformed("body past the end"))?
            .to_vec();
        Ok(m)
    }

    /// The first string of the body, when the body starts with one (an error's text).
    pub fn first_string(&self) -> Option<String> {
        if !self.signature.starts_with('s') {
            return None;
        }
        Reader::new(&self.body, self.big_endian).str().ok()
    }
}

/// A connection to a D-Bus peer (systemd's private socket), authenticated.
pub struct Connection {
    stream: UnixStream,
    deadline: Instant,
    timeout: Duration,
    serial: u32,
}

impl Connection {
    /// Connects to `path` and authenticates as this process's user; every step after
    /// must finish within `timeout` of now.
    pub fn open(path: &Path, timeout: Duration) -> Result<Connection> {
        let deadline = Instant::now() + timeout;
        let stream = connect_nonblocking(path).map_err(|source| Error::Connect {
            path: path.display().to_string(),
            source,
        })?;
        let mut c = Connection {
            stream,
            deadline,
            timeout,
            serial: 0,
        };
        // SAFETY: geteuid cannot fail.
        let uid = unsafe { libc::geteuid() }.to_string();
        let hex: String = uid.bytes().map(|b| format!("{b:02x}")).collect();
        c.send(format!("\0AUTH EXTERNAL {hex}\r\n").as_bytes())?;
        let line = c.read_line()?;
        if !line.starts_with("OK ") {
            return Err(Error::Auth(line));
        }
        c.send(b"BEGIN\r\n")?;
        Ok(c)
    }

    fn remaining(&self) -> Result<Duration> {
        self.deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or(Error::Timeout(self.timeout))
    }

    fn io(&self, what: &'static str, e: io::Error) -> Error {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Error::Timeout(self.timeout),
            _ => Error::Io { what, source: e },
        }
    }

    fn send(&mut self, b: &[u8]) -> Result<()> {
        let t = self.remaining()?;
        self.stream
            .set_write_timeout(Some(t))
            .map_err(|e| self.io("set a write timeout", e))?;
        self.stream
            .write_all(b)
            .map_err(|e| self.io("write to the peer", e))
    }

    fn read_exact(&mut self, b: &mut [u8]) -> Result<()> {
        let mut got = 0;
        while got < b.len() {
            let t = self.remaining()?;
            self.stream
                .set_read_timeout(Some(t))
                .map_err(|e| self.io("set a read timeout", e))?;
            match self.stream.read(&mut b[got..]) {
                Ok(0) => {
                    return Err(Error::Io {
                        what: "read from the peer",
                        source: io::ErrorKind::UnexpectedEof.into(),
                    })
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io("read from the peer", e)),
            }
        }
        Ok(())
    }

    /// One line of the authentication exchange, byte by byte (nothing after it may be
    /// consumed), at most 512 bytes.
    fn read_line(&mut self) -> Result<String> {
        let mut line = Vec::new();
        while !line.ends_with(b"\r\n") {
            if line.len() > 512 {
                return Err(Error::Auth("an overlong line".into()));
            }
            let mut c = [0u8; 1];
            self.read_exact(&mut c)?;
            line.push(c[0]);
        }
        line.truncate(line.len() - 2);
        Ok(String::from_utf8_lossy(&line).into_owned())
    }

    fn read_message(&mut self) -> Result<Message> {
        let mut head = [0u8; 16];
        self.read_exact(&mut head)?;
        let total = Message::total_len(&head)?;
        let mut msg = head.to_vec();
        msg.resize(total, 0);
        self.read_exact(&mut msg[16..])?;
        Message::parse(&msg)
    }

    /// Makes `call` and waits for its answer: the reply, or the peer's error as
    /// `Error::Remote`. Other messages (signals) are skipped.
    pub fn call(&mut self, call: &Call<'_>) -> Result<Message> {
        self.serial += 1;
        let serial = self.serial;
        self.send(&call.marshal(serial))?;
        loop {
            let m = self.read_message()?;
            if m.reply_serial != Some(serial) {
                continue;
            }
            return match m.kind {
                METHOD_RETURN => Ok(m),
                ERROR => Err(Error::Remote {
                    message: m.first_string().unwrap_or_default(),
                    name: m.error_name.unwrap_or_default(),
                }),
                _ => Err(Error::Malformed("a reply of an unknown type")),
            };
        }
    }
}

/// A connect that cannot block: a peer whose backlog is full (a hung systemd) gives
/// `EAGAIN` at once instead of a wait without end.
fn connect_nonblocking(path: &Path) -> io::Result<UnixStream> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain old data.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: a new socket; its fd is owned by the stream below at once.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is ours and open.
    let stream = unsafe { UnixStream::from_raw_fd(fd) };
    // SAFETY: addr is a valid sockaddr_un of the given size.
    let r = unsafe {
        libc::connect(
            fd,
            std::ptr::addr_of!(addr).cast(),
            std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    stream.set_nonblocking(false)?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    fn set_unit_properties() -> Call<'static> {
        Call {
            path: "/org/freedesktop/systemd1",
            interface: "org.freedesktop.systemd1.Manager",
            member: "SetUnitProperties",
            destination: Some("org.freedesktop.systemd1"),
            signature: "sba(sv)",
            args: Box::leak(Box::new([
                Value::Str("c1.scope".into()),
                Value::Bool(true),
                Value::Array(
                    "(sv)",
                    vec![Value::Struct(vec![
                        Value::Str("DeviceAllow".into()),
                        Value::Variant(
                            "a(ss)",
                            Box::new(Value::Array(
                                "(ss)",
                                vec![Value::Struct(vec![
                                    Value::Str("/dev/nvidia0".into()),
                                    Value::Str("rw".into()),
                                ])],
                            )),
                        ),
                    ])],
                ),
            ])),
        }
    }

    #[test]
    fn a_call_is_laid_out_as_the_specification_says() {
        let m = set_unit_properties().marshal(7);
        // fixed header: little-endian, method call, no flags, version 1, serial 7
        assert_eq!(&m[..4], &[b'l', 1, 0, 1]);
        assert_eq!(u32::from_le_bytes(m[8..12].try_into().unwrap()), 7);
        let fields = u32::from_le_bytes(m[12..16].try_into().unwrap()) as usize;
        let body_at = (16 + fields).div_ceil(8) * 8;
        let body = &m[body_at..];
        assert_eq!(
            u32::from_le_bytes(m[4..8].try_into().unwrap()) as usize,
            body.len()
        );
        // the body, byte by byte: "c1.scope", true, then the array of (sv)
        let mut want = Vec::new();
        want.extend_from_slice(&8u32.to_le_bytes());
        want.extend_from_slice(b"c1.scope\0");
        want.extend_from_slice(&[0, 0, 0]); // to 4
        want.extend_from_slice(&1u32.to_le_bytes());
        let outer_len_at = want.len();
        want.extend_from_slice(&0u32.to_le_bytes()); // outer array length, set below
        let outer_start = want.len(); // 24: 8-aligned already
        want.extend_from_slice(&11u32.to_le_bytes());
        want.extend_from_slice(b"DeviceAllow\0");
        want.extend_from_slice(&[5]);
        want.extend_from_slice(b"a(ss)\0");
        want.push(0); // at 47: the array length aligns to 48
        let inner_len_at = want.len();
        want.extend_from_slice(&0u32.to_le_bytes());
        want.extend_from_slice(&[0, 0, 0, 0]); // 52: padding to the first struct
        let inner_elems = want.len();
        want.extend_from_slice(&12u32.to_le_bytes());
        want.extend_from_slice(b"/dev/nvidia0\0");
        want.extend_from_slice(&[0, 0, 0]);
        want.extend_from_slice(&2u32.to_le_bytes());
        want.extend_from_slice(b"rw\0");
        let end = want.len();
        want[inner_len_at..inner_len_at + 4]
            .copy_from_slice(&((end - inner_elems) as u32).to_le_bytes());
        want[outer_len_at..outer_len_at + 4]
            .copy_from_slice(&((end - outer_start) as u32).to_le_bytes());
        assert_eq!(body, &want[..]);
        // the header fields read back
        let parsed = Message::parse(&m).unwrap();
        assert_eq!(parsed.path.as_deref(), Some("/org/freedesktop/systemd1"));
        assert_eq!(parsed.member.as_deref(), Some("SetUnitProperties"));
        assert_eq!(parsed.signature, "sba(sv)");
        assert_eq!(parsed.serial, 7);
    }

    /// A reply or error message as a peer sends it, for the fake peer below.
    fn answer(kind: u8, reply_to: u32, error: Option<&str>, text: &str) -> Vec<u8> {
        let mut body = Writer::default();
        body.str(text);
        let mut w = Writer::default();
        w.buf.extend_from_slice(&[b'l', kind, 1, 1]);
        w.u32(body.buf.len() as u32);
        w.u32(99);
        let f = w.array_start(8);
        if let Some(e) = error {
            w.pad(8);
            w.buf.push(4);
            w.sig("s");
            w.str(e);
        }
        w.pad(8);
        w.buf.push(5);
        w.sig("u");
        w.u32(reply_to);
        w.pad(8);
        w.buf.push(8);
        w.sig("g");
        w.sig("s");
        w.array_end(f);
        w.pad(8);
        w.buf.extend_from_slice(&body.buf);
        w.buf
    }

    /// A peer on a socket in a temporary directory that authenticates the client,
    /// reads one call and answers with what `respond` makes of it.
    fn fake_peer(
        respond: impl FnOnce(Message) -> Option<Vec<u8>> + Send + 'static,
    ) -> (
        tempfile::TempDir,
        std::path::PathBuf,
        std::thread::JoinHandle<()>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("private");
        let l = UnixListener::bind(&path).unwrap();
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = Vec::new();
            let mut c = [0u8; 1];
            while !buf.ends_with(b"\r\n") {
                s.read_exact(&mut c).unwrap();
                buf.push(c[0]);
            }
            assert_eq!(&buf, b"\0AUTH EXTERNAL 30\r\n");
            s.write_all(b"OK 0123456789abcdef0123456789abcdef\r\n")
                .unwrap();
            let mut begin = [0u8; 7];
            s.read_exact(&mut begin).unwrap();
            assert_eq!(&begin, b"BEGIN\r\n");
            let mut head = [0u8; 16];
            s.read_exact(&mut head).unwrap();
            let mut msg = head.to_vec();
            msg.resize(Message::total_len(&head).unwrap(), 0);
            s.read_exact(&mut msg[16..]).unwrap();
            if let Some(a) = respond(Message::parse(&msg).unwrap()) {
                s.write_all(&a).unwrap();
            }
            // hold the connection open until the client is done
            let _ = s.read(&mut c);
        });
        (dir, path, t)
    }

    #[test]
    fn a_reply_and_an_error_come_back() {
        if unsafe { libc::geteuid() } != 0 {
            return; // the fake peer expects uid 0's AUTH line; the suite runs as root
        }
        let (_d, path, t) = fake_peer(|m| {
            // a signal first, which the client must skip
            let mut out = answer(4, 0, None, "noise");
            out.extend(answer(2, m.serial, None, "done"));
            Some(out)
        });
        let mut c = Connection::open(&path, Duration::from_secs(5)).unwrap();
        let r = c.call(&set_unit_properties()).unwrap();
        assert_eq!(r.first_string().as_deref(), Some("done"));
        drop(c);
        t.join().unwrap();

        let (_d, path, t) = fake_peer(|m| {
            Some(answer(
                3,
                m.serial,
                Some("org.freedesktop.systemd1.NoSuchUnit"),
                "Unit c1.scope not loaded.",
            ))
        });
        let mut c = Connection::open(&path, Duration::from_secs(5)).unwrap();
        match c.call(&set_unit_properties()) {
            Err(Error::Remote { name, message }) => {
                assert_eq!(name, "org.freedesktop.systemd1.NoSuchUnit");
                assert_eq!(message, "Unit c1.scope not loaded.");
            }
            other => panic!("expected the peer's error, got {other:?}"),
        }
        drop(c);
        t.join().unwrap();
    }

    #[test]
    fn a_peer_that_does_not_answer_costs_the_timeout_only() {
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let (_d, path, t) = fake_peer(|_| None);
        let clock = Instant::now();
        let mut c = Connection::open(&path, Duration::from_millis(200)).unwrap();
        match c.call(&set_unit_properties()) {
            Err(Error::Timeout(_)) => {}
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert!(clock.elapsed() < Duration::from_secs(2));
        drop(c);
        t.join().unwrap();
        // nobody listening at all: an error at once
        let gone = tempfile::tempdir().unwrap().path().join("none");
        assert!(matches!(
            Connection::open(&gone, Duration::from_secs(1)),
            Err(Error::Connect { .. })
        ));
    }

    #[test]
    fn hostile_messages_are_errors_not_panics() {
        let good = answer(2, 1, Some("x.y"), "text");
        for cut in 0..good.len() {
            let _ = Message::parse(&good[..cut]);
        }
        let mut bad = good.clone();
        for i in 0..bad.len() {
            for v in [0u8, 0xff, 0x7f] {
                let keep = bad[i];
                bad[i] = v;
                let _ = Message::parse(&bad);
                bad[i] = keep;
            }
        }
        let mut head = [0u8; 16];
        head[0] = b'l';
        head[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Message::total_len(&head).is_err());
    }
}
