//! A restricted unpickler: it builds a value tree and never runs code.
//!
//! Pickle is a program for a stack machine whose `GLOBAL` opcodes name arbitrary Python
//! callables. This reader knows only the opcodes that protocols 2–5 use for plain data and
//! accepts a `GLOBAL` only from the caller's allow-list; a call (`REDUCE`, `NEWOBJ`) or `BUILD`
//! merely records its class and arguments for the caller to interpret. Anything else is an
//! error naming the opcode or the class.

use std::collections::HashMap;

/// Why a pickle was refused.
#[derive(Debug, thiserror::Error)]
pub enum PickleError {
    /// A `PROTO` above 5, which postdates this reader.
    #[error("pickle protocol {protocol} is not supported")]
    UnsupportedProtocol {
        /// The protocol the pickle asks for.
        protocol: u8,
    },
    /// The data ends inside an opcode or before `STOP`.
    #[error("pickle is truncated")]
    Truncated,
    /// A `LONG1` wider than i64.
    #[error("integer too large")]
    IntegerTooLarge,
    /// A `MEMOIZE` past the u32 memo indices.
    #[error("memo too large")]
    MemoTooLarge,
    /// A `BINUNICODE8` length past the address space.
    #[error("length too large")]
    LengthTooLarge,
    /// A str whose bytes are not UTF-8.
    #[error("a str is not UTF-8")]
    StrNotUtf8,
    /// A `GLOBAL` module or name that is not UTF-8.
    #[error("a name is not UTF-8")]
    NameNotUtf8,
    /// A `REDUCE` or `NEWOBJ` whose callable is not an allowed global.
    #[error("call of a non-class {callee:?}")]
    CallOfNonClass {
        /// What stood where the callable should.
        callee: Value,
    },
    /// A call whose arguments are not a tuple.
    #[error("`{class}` called with {args:?}")]
    CallArguments {
        /// The class called.
        class: String,
        /// What stood where the argument tuple should.
        args: Value,
    },
    /// Calls copied far more argument ids than the pickle has bytes.
    #[error("pickle expands far beyond its size")]
    Expands,
    /// A `BUILD` on something that is not a call's result.
    #[error("BUILD on {target:?}")]
    BuildOnNonObject {
        /// The value `BUILD` was applied to.
        target: Value,
    },
    /// An opcode outside the plain-data subset.
    #[error("pickle opcode 0x{opcode:02x} at byte {at} is not allowed")]
    OpcodeNotAllowed {
        /// The opcode.
        opcode: u8,
        /// Its byte offset in the pickle.
        at: usize,
    },
    /// A `MARK` where a value should be.
    #[error("unexpected MARK on the pickle stack")]
    UnexpectedMark,
    /// An opcode needed more values than the stack holds.
    #[error("pickle stack underflow")]
    StackUnderflow,
    /// An opcode that collects up to a `MARK` found none.
    #[error("pickle MARK missing")]
    MarkMissing,
    /// A `STACK_GLOBAL` whose module or name is not a str.
    #[error("STACK_GLOBAL of {found:?}")]
    StackGlobalOfNonStr {
        /// What stood where the str should.
        found: Value,
    },
    /// An `APPEND(S)` to something that is not a list.
    #[error("APPEND to {target:?}")]
    AppendToNonList {
        /// The value appended to.
        target: Value,
    },
    /// A `SETITEMS` with a key and no value.
    #[error("SETITEMS with an odd number of items")]
    OddSetItems,
    /// A `SETITEM(S)` on something that is not a dict.
    #[error("SETITEM on {target:?}")]
    SetItemOnNonDict {
        /// The value set on.
        target: Value,
    },
    /// A `GET` of a memo index never `PUT`.
    #[error("pickle memo miss")]
    MemoMiss,
    /// A `GLOBAL` outside the caller's allow-list.
    #[error("pickle class `{class}` is not allowed")]
    ClassNotAllowed {
        /// `module.name` of the global.
        class: String,
    },
}

/// A node of the decoded tree; containers hold ids into [`Pickle::nodes`].
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An integer that fits in i64.
    Int(i64),
    /// A float.
    Float(f64),
    /// A str.
    Str(String),
    /// A bytes object.
    Bytes(Vec<u8>),
    /// A tuple.
    Tuple(Vec<usize>),
    /// A list.
    List(Vec<usize>),
    /// A dict, in insertion order.
    Dict(Vec<(usize, usize)>),
    /// An allowed global, `module.name`.
    Global(String),
    /// `class(*args)` (from `REDUCE` or `NEWOBJ`), with the state `BUILD` gave it.
    Object {
        /// `module.name` of the callable.
        class: String,
        /// The argument tuple's items.
        args: Vec<usize>,
        /// The `BUILD` state, if any.
        state: Option<usize>,
    },
    /// A persistent id (`BINPERSID`): torch.save's reference to a storage record.
    Persistent(usize),
}

/// A decoded pickle: all nodes, and the root.
#[derive(Debug)]
pub struct Pickle {
    /// Every node; ids index this.
    pub nodes: Vec<Value>,
    /// The value `STOP` returned.
    pub root: usize,
}

impl Pickle {
    /// The node with id `id`.
    pub fn get(&self, id: usize) -> &Value {
        &self.nodes[id]
    }
}

enum Item {
    Mark,
    Node(usize),
}

/// Decodes `data`, accepting only globals whose `module.name` is in `allowed`.
pub fn parse(data: &[u8], allowed: &[&str]) -> Result<Pickle, PickleError> {
    Machine {
        data,
        pos: 0,
        nodes: Vec::new(),
        stack: Vec::new(),
        memo: HashMap::new(),
        allowed,
        copied: 0,
    }
    .run()
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    nodes: Vec<Value>,
    stack: Vec<Item>,
    memo: HashMap<u32, usize>,
    allowed: &'a [&'a str],
    /// Argument ids copied into objects so far, see [`MAX_COPIED_PER_BYTE`].
    copied: usize,
}

/// A call copies its argument tuple, and a memoized tuple costs two bytes to reuse, so a small
/// hostile pickle could otherwise decode to a tree quadratic in its size. Real pickles build
/// each argument tuple once (or reuse short ones), far below this.
const MAX_COPIED_PER_BYTE: usize = 4;

impl Machine<'_> {
    fn run(mut self) -> Result<Pickle, PickleError> {
        loop {
            let at = self.pos;
            let op = self.take(1)?[0];
            match op {
                0x80 => {
                    let proto = self.take(1)?[0];
                    if proto > 5 {
                        return Err(PickleError::UnsupportedProtocol { protocol: proto });
                    }
                }
                0x95 => {
                    self.take(8)?; // FRAME: a length hint only
                }
                b'.' => {
                    let root = self.pop_node()?;
                    return Ok(Pickle {
                        nodes: self.nodes,
                        root,
                    });
                }
                b'(' => self.stack.push(Item::Mark),
                b'N' => self.push(Value::None),
                0x88 => self.push(Value::Bool(true)),
                0x89 => self.push(Value::Bool(false)),
                b'J' => {
                    let v = i32::from_le_bytes(self.array()?);
                    self.push(Value::Int(v.into()))
                }
                b'K' => {
                    let v = self.take(1)?[0];
                    self.push(Value::Int(v.into()))
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.array()?);
                    self.push(Value::Int(v.into()))
                }
                0x8a => {
                    let n = self.take(1)?[0] as usize;
                    let bytes = self.take(n)?;
                    let v = long(bytes).ok_or(PickleError::IntegerTooLarge)?;
                    self.push(Value::Int(v))
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.array()?);
                    self.push(Value::Float(v))
                }
                0x8c => {
                    let n = self.take(1)?[0] as usize;
                    let s = self.text(n)?;
                    self.push(Value::Str(s))
                }
                b'X' => {
                    let n = u32::from_le_bytes(self.array()?) as usize;
                    let s = self.text(n)?;
                    self.push(Value::Str(s))
                }
                0x8d => {
                    let n = self.len8()?;
                    let s = self.text(n)?;
                    self.push(Value::Str(s))
                }
                b'C' => {
                    let n = self.take(1)?[0] as usize;
                    let b = self.take(n)?.to_vec();
                    self.push(Value::Bytes(b))
                }
                b'B' => {
                    let n = u32::from_le_bytes(self.array()?) as usize;
                    let b = self.take(n)?.to_vec();
                    self.push(Value::Bytes(b))
                }
                b')' => self.push(Value::Tuple(Vec::new())),
                b']' => self.push(Value::List(Vec::new())),
                b'}' => self.push(Value::Dict(Vec::new())),
                b't' => {
                    let items = self.pop_mark()?;
                    self.push(Value::Tuple(items))
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let items = self.pop_n(n)?;
                    self.push(Value::Tuple(items))
                }
                b'a' => {
                    let item = self.pop_node()?;
                    self.extend_list(vec![item])?
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.extend_list(items)?
                }
                b's' => {
                    let v = self.pop_node()?;
                    let k = self.pop_node()?;
                    self.extend_dict(vec![k, v])?
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.extend_dict(items)?
                }
                b'q' => {
                    let i = self.take(1)?[0].into();
                    self.put(i)?
                }
                b'r' => {
                    let i = u32::from_le_bytes(self.array()?);
                    self.put(i)?
                }
                0x94 => {
                    let i =
                        u32::try_from(self.memo.len()).map_err(|_| PickleError::MemoTooLarge)?;
                    self.put(i)?
                }
                b'h' => {
                    let i = self.take(1)?[0].into();
                    self.get(i)?
                }
                b'j' => {
                    let i = u32::from_le_bytes(self.array()?);
                    self.get(i)?
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.global(&module, &name)?
                }
                0x93 => {
                    let name = self.pop_str()?;
                    let module = self.pop_str()?;
                    self.global(&module, &name)?
                }
                b'R' | 0x81 => {
                    let args = self.pop_node()?;
                    let callable = self.pop_node()?;
                    let class = match self.node(callable) {
                        Value::Global(g) => g.clone(),
                        other => {
                            return Err(PickleError::CallOfNonClass {
                                callee: other.clone(),
                            })
                        }
                    };
                    let args = match self.node(args) {
                        Value::Tuple(items) => items.clone(),
                        other => {
                            return Err(PickleError::CallArguments {
                                class,
                                args: other.clone(),
                            })
                        }
                    };
                    self.copied += args.len();
                    if self.copied > MAX_COPIED_PER_BYTE * self.data.len() + 4096 {
                        return Err(PickleError::Expands);
                    }
                    self.push(Value::Object {
                        class,
                        args,
                        state: None,
                    })
                }
                b'b' => {
                    let state = self.pop_node()?;
                    let obj = self.top_node()?;
                    match &mut self.nodes[obj] {
                        Value::Object { state: s, .. } => *s = Some(state),
                        other => {
                            return Err(PickleError::BuildOnNonObject {
                                target: other.clone(),
                            })
                        }
                    }
                }
                b'Q' => {
                    let pid = self.pop_node()?;
                    self.push(Value::Persistent(pid))
                }
                other => return Err(PickleError::OpcodeNotAllowed { opcode: other, at }),
            }
        }
    }

    fn take(&mut self, n: usize) -> Result<&[u8], PickleError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or(PickleError::Truncated)?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], PickleError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn len8(&mut self) -> Result<usize, PickleError> {
        usize::try_from(u64::from_le_bytes(self.array()?)).map_err(|_| PickleError::LengthTooLarge)
    }

    fn text(&mut self, n: usize) -> Result<String, PickleError> {
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| PickleError::StrNotUtf8)
    }

    fn line(&mut self) -> Result<String, PickleError> {
        let rest = &self.data[self.pos..];
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or(PickleError::Truncated)?;
        let s = String::from_utf8(rest[..end].to_vec()).map_err(|_| PickleError::NameNotUtf8)?;
        self.pos += end + 1;
        Ok(s)
    }

    fn push(&mut self, v: Value) {
        self.nodes.push(v);
        self.stack.push(Item::Node(self.nodes.len() - 1));
    }

    fn node(&self, id: usize) -> &Value {
        &self.nodes[id]
    }

    fn pop_node(&mut self) -> Result<usize, PickleError> {
        match self.stack.pop() {
            Some(Item::Node(id)) => Ok(id),
            Some(Item::Mark) => Err(PickleError::UnexpectedMark),
            None => Err(PickleError::StackUnderflow),
        }
    }

    fn top_node(&self) -> Result<usize, PickleError> {
        match self.stack.last() {
            Some(Item::Node(id)) => Ok(*id),
            _ => Err(PickleError::StackUnderflow),
        }
    }

    fn pop_n(&mut self, n: usize) -> Result<Vec<usize>, PickleError> {
        let mut items = (0..n)
            .map(|_| self.pop_node())
            .collect::<Result<Vec<_>, _>>()?;
        items.reverse();
        Ok(items)
    }

    fn pop_mark(&mut self) -> Result<Vec<usize>, PickleError> {
        let mut items = Vec::new();
        loop {
            match self.stack.pop() {
                Some(Item::Node(id)) => items.push(id),
                Some(Item::Mark) => break,
                None => return Err(PickleError::MarkMissing),
            }
        }
        items.reverse();
        Ok(items)
    }

    fn pop_str(&mut self) -> Result<String, PickleError> {
        let id = self.pop_node()?;
        match self.node(id) {
            Value::Str(s) => Ok(s.clone()),
            other => Err(PickleError::StackGlobalOfNonStr {
                found: other.clone(),
            }),
        }
    }

    fn extend_list(&mut self, items: Vec<usize>) -> Result<(), PickleError> {
        let list = self.top_node()?;
        match &mut self.nodes[list] {
            Value::List(l) => {
                l.extend(items);
                Ok(())
            }
            other => Err(PickleError::AppendToNonList {
                target: other.clone(),
            }),
        }
    }

    fn extend_dict(&mut self, items: Vec<usize>) -> Result<(), PickleError> {
        if !items.len().is_multiple_of(2) {
            return Err(PickleError::OddSetItems);
        }
        let dict = self.top_node()?;
        match &mut self.nodes[dict] {
            Value::Dict(d) => {
                d.extend(items.chunks(2).map(|kv| (kv[0], kv[1])));
                Ok(())
            }
            other => Err(PickleError::SetItemOnNonDict {
                target: other.clone(),
            }),
        }
    }

    fn put(&mut self, i: u32) -> Result<(), PickleError> {
        let top = self.top_node()?;
        self.memo.insert(i, top);
        Ok(())
    }

    fn get(&mut self, i: u32) -> Result<(), PickleError> {
        let id = *self.memo.get(&i).ok_or(PickleError::MemoMiss)?;
        self.stack.push(Item::Node(id));
        Ok(())
    }

    fn global(&mut self, module: &str, name: &str) -> Result<(), PickleError> {
        let full = format!("{module}.{name}");
        if !self.allowed.contains(&full.as_str()) {
            return Err(PickleError::ClassNotAllowed { class: full });
        }
        self.push(Value::Global(full));
        Ok(())
    }
}

/// A little-endian two's-complement integer (`LONG1`), if it fits in i64.
fn long(bytes: &[u8]) -> Option<i64> {
    if bytes.is_empty() {
        return Some(0);
    }
    if bytes.len() > 8 {
        return None;
    }
    let fill = if bytes[bytes.len() - 1] & 0x80 != 0 {
        0xff
    } else {
        0
    };
    let mut b = [fill; 8];
    b[..bytes.len()].copy_from_slice(bytes);
    Some(i64::from_le_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_data_and_refuses_foreign_globals() {
        // pickle.dumps({"a": (1, -2, 300, 1.5, None, True)}, protocol=4)-style program, by hand.
        let p = b"\x80\x04}\x94\x8c\x01a\x94(K\x01J\xfe\xff\xff\xffM,\x01G?\xf8\x00\x00\x00\x00\x00\x00N\x88t\x94s.";
        let pk = parse(p, &[]).expect("parses");
        let Value::Dict(d) = pk.get(pk.root) else {
            panic!("not a dict")
        };
        let Value::Tuple(t) = pk.get(d[0].1) else {
            panic!("not a tuple")
        };
        let vals: Vec<&Value> = t.iter().map(|&i| pk.get(i)).collect();
        assert_eq!(
            vals,
            [
                &Value::Int(1),
                &Value::Int(-2),
                &Value::Int(300),
                &Value::Float(1.5),
                &Value::None,
                &Value::Bool(true)
            ]
        );
        let evil = b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00lsq\x00\x85R.";
        let err = parse(evil, &["torch.Size"]).unwrap_err();
        let err = err.to_string();
        assert!(err.contains("`os.system` is not allowed"), "{err}");
        assert!(parse(b"\x80\x02K", &[])
            .unwrap_err()
            .to_string()
            .contains("truncated"));
        assert_eq!(long(&[0xff, 0xff]), Some(-1));
        assert_eq!(long(&[0x00, 0x01]), Some(256));
    }
}
