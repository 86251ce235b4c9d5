/**
 * Copying text from the page. navigator.clipboard exists only in a secure context (https, or
 * http on localhost); a server reached over plain http on the LAN gets none, so there the old
 * way is used: select the text in a hidden textarea and execCommand('copy'), which still works
 * during a click.
 */
export async function copyText(text: string): Promise<void> {
  if (navigator.clipboard && window.isSecureContext) {
    await navigator.clipboard.writeText(text);
    return;
  }
  const area = document.createElement('textarea');
  area.value = text;
  area.setAttribute('readonly', '');
  area.className = 'offscreen';
  document.body.append(area);
  area.select();
  try {
    if (!document.execCommand('copy')) throw new Error('the browser refused to copy (no clipboard on a page served over plain http)');
  } finally {
    area.remove();
  }
}
