import { Errno, KernelError } from './errno';
import { CommandLine } from './cmdline';

describe('CommandLine', () => {
  it('parses flags, values, repeats and quotes', () => {
    const c = new CommandLine('quiet  kho=on reserve_mem=1M:4K:log reserve_mem=2M:2M:trace x="a b"');
    expect(c.has('quiet')).toBe(true);
    expect(c.get('quiet')).toBeUndefined();
    expect(c.getBool('kho', false)).toBe(true);
    expect(c.getAll('reserve_mem')).toEqual(['1M:4K:log', '2M:2M:trace']);
    expect(c.get('x')).toBe('a b');
    expect(c.getBool('absent', true)).toBe(true);
  });

  it('knows nothing that is not on the line, and keeps its text', () => {
    const c = new CommandLine('kho=on');
    expect(c.has('quiet')).toBe(false);
    expect(c.get('quiet')).toBeUndefined();
    expect(c.getAll('quiet')).toEqual([]);
    expect(c.getBool('quiet', false)).toBe(false);
    expect(String(c)).toBe('kho=on');
    const empty = new CommandLine();
    expect(empty.text).toBe('');
    expect(String(empty)).toBe('');
    expect(empty.has('')).toBe(false);
  });

  it('splits on any run of whitespace, leading and trailing included', () => {
    const c = new CommandLine(' \t a=1 \n\n b  ');
    expect(c.get('a')).toBe('1');
    expect(c.has('b')).toBe(true);
    expect(c.getAll('b')).toEqual(['']);
    expect(c.has('')).toBe(false);
  });

  it('get gives the last occurrence; getAll gives a bare flag as an empty value', () => {
    const c = new CommandLine('k=1 k k=3');
    expect(c.get('k')).toBe('3');
    expect(c.getAll('k')).toEqual(['1', '', '3']);
    expect(new CommandLine('k=1 k').get('k')).toBeUndefined();
  });

  it('splits at the first = only; a word starting with = has an empty key', () => {
    const c = new CommandLine('a=b=c =x');
    expect(c.get('a')).toBe('b=c');
    expect(c.get('')).toBe('x');
    expect(c.has('=x')).toBe(false);
  });

  it('quotes may sit anywhere in a word and group whitespace', () => {
    const c = new CommandLine('"k y"=1 v="" w="a"b"c d"');
    expect(c.get('k y')).toBe('1');
    expect(c.get('v')).toBe('');
    expect(c.get('w')).toBe('abc d');
  });

  it.each([
    ['k', true],
    ['k=1', true],
    ['k=on', true],
    ['k=ON', true],
    ['k=y', true],
    ['k=Yes', true],
    ['k=true', true],
    ['k=0', false],
    ['k=off', false],
    ['k=n', false],
    ['k=NO', false],
    ['k=false', false],
  ])('getBool: %s is %p whatever the default', (text, value) => {
    const c = new CommandLine(text);
    expect(c.getBool('k', true)).toBe(value);
    expect(c.getBool('k', false)).toBe(value);
  });

  it.each([
    ['kho=maybe', "EINVAL: command line: kho='maybe' is not a boolean (wanted on/off, 1/0, y/n)"],
    ['kho=', "EINVAL: command line: kho='' is not a boolean (wanted on/off, 1/0, y/n)"],
    // a boolean word is the whole value, not a prefix or a suffix of it
    ['kho=onward', "EINVAL: command line: kho='onward' is not a boolean (wanted on/off, 1/0, y/n)"],
    ['kho=canon', "EINVAL: command line: kho='canon' is not a boolean (wanted on/off, 1/0, y/n)"],
    ['kho=nope', "EINVAL: command line: kho='nope' is not a boolean (wanted on/off, 1/0, y/n)"],
    ['kho=10', "EINVAL: command line: kho='10' is not a boolean (wanted on/off, 1/0, y/n)"],
    ['kho=xoff', "EINVAL: command line: kho='xoff' is not a boolean (wanted on/off, 1/0, y/n)"],
  ])('refuses %s', (text, message) => {
    let err: unknown;
    try {
      new CommandLine(text).getBool('kho', true);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(KernelError);
    expect((err as KernelError).errno).toBe(Errno.EINVAL);
    expect((err as KernelError).message).toBe(message);
  });

  it('refuses an unterminated quote', () => {
    expect(() => new CommandLine('a="b')).toThrow('EINVAL: command line: unterminated quote in \'a="b\'');
  });
});
